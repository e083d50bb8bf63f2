#pragma once
// The flopwise command line: model, plan, compare, profiles, bench.
#include <ostream>

namespace flopwise {

// Runs one command line; returns the process exit code (0 ok, 2 bad input).
int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace flopwise
