#include <iostream>

#include "flopwise/cli.hpp"

int main(int argc, char** argv) { return flopwise::run_cli(argc, argv, std::cout, std::cerr); }
