// Runs a command line through the shell and captures its exit code, stdout and stderr.
#pragma once

#include <string>
#include <vector>

namespace kvsteer::test {

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Each argument is shell-quoted.
CommandResult run_command(const std::vector<std::string>& argv);

}  // namespace kvsteer::test
