#include "support/run_command.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>

#include "support/test_env.h"

namespace kvsteer::test {
namespace {

std::string quote(const std::string& arg) {
  std::string q = "'";
  for (char c : arg) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

}  // namespace

CommandResult run_command(const std::vector<std::string>& argv) {
  TempDir dir;
  std::string cmd;
  for (const auto& a : argv) cmd += quote(a) + " ";
  cmd += ">" + quote(dir.file("out")) + " 2>" + quote(dir.file("err")) + " </dev/null";
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(dir.file("out"));
  r.err = read_file(dir.file("err"));
  return r;
}

}  // namespace kvsteer::test
