#pragma once
// Bad input (files, fields, options) is reported as one line naming where it came from.
#include <stdexcept>
#include <string>

namespace flopwise {

// Thrown for any user-facing input problem; the CLI prints what() and exits with code 2.
class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& message) : std::runtime_error(message) {}
};

// "source: field: problem", the shape every input error takes.
inline InputError input_error(const std::string& source, const std::string& field,
                              const std::string& problem) {
  std::string where = source;
  if (!field.empty()) where += where.empty() ? field : ": " + field;
  return InputError(where + ": " + problem);
}

}  // namespace flopwise
