#pragma once
// Text output of the CLI: tables people read, with units in the headers.
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "flopwise/plan_builder.hpp"

namespace flopwise {

// snprintf into a string of whatever length it takes: an infeasible profile's row carries the
// search's reasons, longer than any fixed buffer (a truncated row lost its newline).
template <typename... Values>
std::string printf_string(const char* format, Values... values) {
  const int length = std::snprintf(nullptr, 0, format, values...);
  if (length <= 0) return {};
  std::string text(static_cast<size_t>(length) + 1, '\0');
  std::snprintf(text.data(), text.size(), format, values...);
  text.resize(static_cast<size_t>(length));
  return text;
}

std::string layout_label(const Layout& layout);  // "tp8 pp4 vpp2 ep8 dp32 mb1 sel zero1"
// Width of the layout column in every table, wide enough for "... sel(mla,mlp) zero1 ends12/12".
inline constexpr int kLayoutColumn = 58;

struct TableRow {
  std::string hardware;
  const Candidate* candidate = nullptr;  // null: no feasible layout
  std::string note;                       // why not, or a marker such as "cheapest"
};

void print_plan_table(std::ostream& out, const std::vector<TableRow>& rows);
void print_breakdown(std::ostream& out, const Candidate& candidate);
// "goodput 97.6%: a failure every 4.1 d; checkpoint 4.07 TB every 91 steps (2.2 h), ...".
std::string goodput_line(const Goodput& goodput);
void print_rejections(std::ostream& out, const SearchResult& result);
void print_model(std::ostream& out, const ModelConfig& model, int seq_len);

}  // namespace flopwise
