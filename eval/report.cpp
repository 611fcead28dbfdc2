// Writing the report: figures through gnuplot, then report.md and report.html, staged and moved
// into place together.
#include "eval/report.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "eval/report_render.h"
#include "kvsteer/error.h"

namespace kvsteer::eval {
namespace {

namespace fs = std::filesystem;

constexpr const char* kGnuplotHint =
    "the report's figures are drawn by gnuplot: install the Debian package gnuplot-nox "
    "(apt-get install gnuplot-nox, or scripts/install_deps.sh)";

// The executable gnuplot resolves to: a path as given, else the first match on PATH.
std::string find_gnuplot(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) {
      return name;
    }
    throw Error(ErrorCode::NotFound, "gnuplot not found at '" + name + "': " + kGnuplotHint);
  }
  const char* path_env = std::getenv("PATH");
  std::stringstream dirs(path_env != nullptr ? path_env : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  throw Error(ErrorCode::NotFound, "'" + name + "' not found on PATH: " + kGnuplotHint);
}

// A folder removed, with everything in it, when the object dies.
class StagingDir {
 public:
  explicit StagingDir(const std::string& parent) {
    std::string pattern = parent + "/.kvsteer-report-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw Error(ErrorCode::Io, "cannot create a staging folder in '" + parent + "'");
    }
    path_ = pattern;
  }
  ~StagingDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) {
    throw Error(ErrorCode::Io, "cannot write '" + path + "'");
  }
}

// gnuplot's log and SVG, which may be missing after a failed run: empty then, and the caller says
// what went wrong.
std::string read_text_or_empty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Runs `gnuplot script` in dir; stdout and stderr go to log. Returns the exit status (127 when
// the exec failed, -1 when the child died from a signal).
int run_gnuplot(const std::string& gnuplot, const std::string& dir, const std::string& script,
                const std::string& log) {
  // Everything the child needs is prepared before fork: it only calls async-signal-safe
  // functions.
  std::vector<std::string> args = {"gnuplot", script};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    throw Error(ErrorCode::Backend, "cannot start gnuplot: fork failed");
  }
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ::chdir(dir.c_str()) != 0) {
      ::_exit(127);
    }
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
    ::execv(gnuplot.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      throw Error(ErrorCode::Backend, "cannot wait for gnuplot");
    }
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The first lines of gnuplot's log, on one line.
std::string log_excerpt(const std::string& log) {
  std::string text = read_text_or_empty(log);
  if (text.size() > 600) {
    text = text.substr(0, 600) + "...";
  }
  std::string out;
  for (char ch : text) {
    if (ch == '\n' || ch == '\r') {
      if (!out.empty() && out.back() != ' ') {
        out += ' ';
      }
    } else {
      out += ch;
    }
  }
  while (!out.empty() && out.back() == ' ') {
    out.pop_back();
  }
  return out.empty() ? "(no output)" : out;
}

// Draws one figure: writes <name>.gp, runs gnuplot, checks that <name>.svg is a whole SVG.
detail::Figure draw(const std::string& gnuplot, const StagingDir& staging, const std::string& name,
                    const std::string& task, const std::string& caption,
                    const detail::PlotScript& script) {
  const std::string svg_name = name + ".svg";
  // noenhanced: task names and labels are printed as they are ("c_v" is no subscript).
  write_text(staging.file(name + ".gp"),
             "set terminal svg size " + script.size +
                 " dynamic noenhanced font 'sans,11' background rgb 'white'\n"
                 "set output '" +
                 svg_name + "'\n" + script.body);
  const std::string log = staging.file(name + ".log");
  const int status = run_gnuplot(gnuplot, staging.file(""), name + ".gp", log);
  if (status != 0) {
    throw Error(ErrorCode::Backend, "gnuplot ('" + gnuplot + "') failed drawing " + svg_name +
                                        " (exit status " + std::to_string(status) +
                                        "): " + log_excerpt(log));
  }
  std::string svg = read_text_or_empty(staging.file(svg_name));
  if (svg.find("<svg") == std::string::npos || svg.find("</svg>") == std::string::npos) {
    throw Error(ErrorCode::Backend, "gnuplot ('" + gnuplot + "') wrote no complete SVG to " +
                                        svg_name + ": " + log_excerpt(log));
  }
  return {task, caption, svg_name, std::move(svg)};
}

// A file-name-safe form of a task name: [A-Za-z0-9._-], everything else as '_'.
std::string slug(const std::string& text) {
  std::string out;
  for (char ch : text) {
    const bool safe = std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-';
    out += safe && static_cast<unsigned char>(ch) < 0x80 ? ch : '_';
  }
  if (out.empty() || out.front() == '.') {
    out.insert(out.begin(), '_');
  }
  return out;
}

// A figure name per task; tasks whose slugs collide get a numeric suffix.
std::map<std::string, std::string> task_slugs(const std::vector<std::string>& tasks) {
  std::map<std::string, std::string> out;
  std::set<std::string> used;
  for (const std::string& task : tasks) {
    std::string name = slug(task);
    for (int i = 2; used.count(name) != 0; ++i) {
      name = slug(task) + "-" + std::to_string(i);
    }
    used.insert(name);
    out[task] = name;
  }
  return out;
}

void move_into(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) {
    throw Error(ErrorCode::Io, "cannot write '" + to + "': " + ec.message());
  }
}

}  // namespace

std::vector<std::string> write_report(const ReportInputs& inputs, const ReportOptions& options) {
  if (options.out_dir.empty()) {
    throw Error(ErrorCode::InvalidArgument, "no output folder given (--out DIR)");
  }
  if (inputs.summaries.empty() && inputs.sweeps.empty()) {
    throw Error(ErrorCode::InvalidArgument, "no inputs: nothing to report");
  }
  // gnuplot first: without it nothing is written, not even the output folder.
  const std::string gnuplot = find_gnuplot(options.gnuplot);
  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec || !fs::is_directory(options.out_dir)) {
    throw Error(ErrorCode::Io, "cannot create output folder '" + options.out_dir +
                                   "': " + (ec ? ec.message() : "not a folder"));
  }
  const StagingDir staging(options.out_dir);

  const std::vector<std::string> tasks = detail::report_tasks(inputs);
  const auto slugs = task_slugs(tasks);
  std::vector<detail::Figure> figures;
  for (const std::string& task : tasks) {
    if (auto script = detail::stability_script(inputs, task)) {
      figures.push_back(draw(gnuplot, staging, "stability-" + slugs.at(task), task,
                             "Accuracy against the steering coefficient: " + task, *script));
    }
    if (auto script = detail::lengths_script(inputs, task)) {
      figures.push_back(draw(gnuplot, staging, "lengths-" + slugs.at(task), task,
                             "Answer lengths per method: " + task, *script));
    }
  }
  write_text(staging.file("report.md"), detail::render_markdown(inputs, figures, options.title));
  write_text(staging.file("report.html"), detail::render_html(inputs, figures, options.title));

  // Every file is complete: move them in, the figures before the documents that show them.
  std::vector<std::string> names;
  names.reserve(figures.size() + 2);
  for (const detail::Figure& figure : figures) {
    names.push_back(figure.file);
  }
  names.push_back("report.md");
  names.push_back("report.html");
  std::vector<std::string> written;
  for (const std::string& name : names) {
    const std::string target = (fs::path(options.out_dir) / name).string();
    move_into(staging.file(name), target);
    written.push_back(target);
  }
  return written;
}

}  // namespace kvsteer::eval
