#include "isolation/cgroups.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/sys.h"
#include "common/unique_fd.h"

namespace sp::isolation {

namespace {

constexpr uint32_t kV1KillRounds = 100;  // a job at its pids.max cannot outgrow these
constexpr int kRmdirTries = 50;          // x 10 ms, for processes still leaving a cgroup
constexpr uint64_t kPidMaxLimit = 1 << 22;
constexpr uint64_t kMemoryNoLimit = 1ull << 62;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

Status write_text(const std::string& path, std::string_view text) {
  auto fd = sys("open", [&] { return ::open(path.c_str(), O_WRONLY | O_CLOEXEC); });
  if (!fd) return Error{fd.error().code, "cannot open " + path};
  UniqueFd f(*fd);
  if (auto w = sys("write", [&] { return ::write(f.get(), text.data(), text.size()); }); !w)
    return Error{w.error().code, "cannot write " + std::string(text) + " to " + path};
  return {};
}

Status make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return {};
  return Error{errno, "cannot create " + path};
}

bool has_word(std::string_view list, std::string_view word, char sep) {
  while (!list.empty()) {
    size_t end = list.find(sep);
    if (list.substr(0, end) == word) return true;
    if (end == std::string_view::npos) break;
    list.remove_prefix(end + 1);
  }
  return false;
}

// Mount point of the cgroup2 hierarchy (controller ""), or of the cgroup v1
// hierarchy that carries `controller`; "" if none.
std::string mount_of(std::string_view controller) {
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point, rest;
    f >> id >> parent >> dev >> root >> point;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string type, source, options;
    tail >> type >> source >> options;
    if (controller.empty() ? type == "cgroup2"
                           : type == "cgroup" && has_word(options, controller, ','))
      return point;
  }
  return {};
}

// This process's cgroup path in the hierarchy of `controller` ("" for v2).
std::string path_of(std::string_view controller) {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string_view list = std::string_view(line).substr(a + 1, b - a - 1);
    bool match = controller.empty() ? line.compare(0, a, "0") == 0 && list.empty()
                                    : has_word(list, controller, ',');
    if (match) return line.substr(b + 1);
  }
  return {};
}

std::string join(const std::string& mount, const std::string& path) {
  return path == "/" ? mount : mount + path;
}

// Whether `pid`'s cgroup in the v1 pids hierarchy ends with `suffix`.
bool in_pids_cgroup(pid_t pid, std::string_view suffix) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  for (std::string line; std::getline(in, line);) {
    size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    if (!has_word(std::string_view(line).substr(a + 1, b - a - 1), "pids", ',')) continue;
    return line.size() >= suffix.size() &&
           line.compare(line.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  return false;
}

std::vector<pid_t> pids_in(const std::string& procs) {
  std::vector<pid_t> out;
  std::ifstream in(procs);
  for (pid_t p; in >> p;) out.push_back(p);
  return out;
}

constexpr const char* kControllers = "+memory +pids";

// v2: this process's cgroup, if it has the memory and pids controllers.
Result<std::string> v2_base() {
  std::string mount = mount_of("");
  if (mount.empty()) return Error{0, "no cgroup2 mount"};
  std::string base = join(mount, path_of(""));
  std::string controllers = read_text(base + "/cgroup.controllers");
  std::string_view first_line = std::string_view(controllers).substr(0, controllers.find('\n'));
  if (!has_word(first_line, "memory", ' ') || !has_word(first_line, "pids", ' '))
    return Error{0, base + " lacks the memory and pids controllers"};
  return base;
}

// After `busy` (EBUSY: `base` has processes of its own), moves the daemon
// into `leaf` and enables the controllers again; back where it was if that
// fails too.
Status enable_from_leaf(const std::string& base, const std::string& leaf, Status busy) {
  if (!make_dir(leaf)) return busy;
  Status enabled = busy;
  if (write_text(leaf + "/cgroup.procs", "0")) {
    enabled = write_text(base + "/cgroup.subtree_control", kControllers);
    // Others share our cgroup: it is not ours to reorganize. Go back.
    if (!enabled) (void)write_text(base + "/cgroup.procs", "0");
  }
  if (!enabled) ::rmdir(leaf.c_str());
  return enabled;
}

// Enables the memory and pids controllers for `base`'s children. They are
// enabled for children only in a cgroup without processes of its own (except
// at the root): if need be, moves the daemon into a leaf of its own first,
// `leaf`, as a service with Delegate=yes does.
Status enable_controllers(const std::string& base, const std::string& leaf) {
  Status enabled = write_text(base + "/cgroup.subtree_control", kControllers);
  if (enabled || enabled.error().code != EBUSY) return enabled;
  return enable_from_leaf(base, leaf, enabled);
}

// v2: the root of the tree `name` in a delegated subtree with both
// controllers, or why there is none.
Result<std::string> v2_root(const std::string& name) {
  Result<std::string> base = v2_base();
  if (!base) return base;
  if (Status s = enable_controllers(*base, *base + name + "-daemon"); !s) return s.error();
  return *base + name;
}

// v1: the roots of the tree `name` in writable pids and memory hierarchies
// (in that order), or why there are none.
Result<std::vector<std::string>> v1_roots(const std::string& name) {
  std::vector<std::string> roots;
  for (const char* ctl : {"pids", "memory"}) {
    std::string mount = mount_of(ctl);
    std::string base = mount.empty() ? "" : join(mount, path_of(ctl));
    if (base.empty() || ::access(base.c_str(), W_OK) != 0)
      return Error{0, std::string("no writable cgroup v1 ") + ctl + " hierarchy"};
    roots.push_back(base + name);
  }
  return roots;
}

}  // namespace

Result<Cgroups> Cgroups::create(std::string_view instance, CgroupMode mode) {
  if (mode == CgroupMode::kOff) return none("per-job cgroups are turned off (--cgroups off)");
  Cgroups c;
  if (Status found = c.find_tree("/" + std::string(instance)); !found) {
    if (mode == CgroupMode::kAlways) return Error{ENOTSUP, found.error().message()};
    return none(found.error().message());
  }
  c.every_job_ = mode == CgroupMode::kAlways;
  c.remove();  // a stale tree of an earlier instance on the same socket
  if (Status made = c.make_tree(); !made) {
    c.remove();
    if (mode == CgroupMode::kAlways) return made.error();
    return none(made.error().message());
  }
  return c;
}

Cgroups Cgroups::none(std::string why_not) {
  Cgroups c;
  c.why_not_ = std::move(why_not);
  return c;
}

Status Cgroups::find_tree(const std::string& name) {
  Result<std::string> v2 = v2_root(name);
  if (v2) {
    version_ = 2;
    roots_ = {*v2};
    return {};
  }
  Result<std::vector<std::string>> v1 = v1_roots(name);
  if (v1) {
    version_ = 1;
    roots_ = std::move(*v1);
    return {};
  }
  return Error{0, "no usable cgroups (" + v2.error().message() + "; " + v1.error().message() + ")"};
}

Status Cgroups::make_tree() const {
  for (const std::string& root : roots_) {
    if (Status s = make_dir(root); !s) return s;
    if (version_ != 2) continue;
    if (Status s = write_text(root + "/cgroup.subtree_control", kControllers); !s) return s;
    if (::access((root + "/cgroup.kill").c_str(), F_OK) != 0)
      return Error{ENOTSUP, "the kernel has no cgroup.kill (it needs 5.14)"};
  }
  return {};
}

std::string Cgroups::encode() const {
  std::string out = std::to_string(version_) + (every_job_ ? ",all" : ",limited");
  for (const std::string& r : roots_) out += "," + r;
  return out;
}

Cgroups Cgroups::decode(std::string_view text) {
  Cgroups c;
  std::vector<std::string> parts;
  while (!text.empty()) {
    size_t comma = text.find(',');
    parts.emplace_back(text.substr(0, comma));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  if (parts.size() < 3 || (parts[0] != "1" && parts[0] != "2")) return c;
  c.version_ = parts[0][0] - '0';
  c.every_job_ = parts[1] == "all";
  c.roots_.assign(parts.begin() + 2, parts.end());
  return c;
}

std::string Cgroups::scope() const {
  if (!version_) return "none";
  return every_job_ ? "every job" : "jobs with a processes or memory_bytes limit";
}

shm::Isolation Cgroups::isolation() const {
  return version_ == 2   ? shm::Isolation::kCgroupV2
         : version_ == 1 ? shm::Isolation::kCgroupV1
                         : shm::Isolation::kProcessGroup;
}

std::string Cgroups::job_dir(size_t i, uint32_t slot) const {
  return roots_[i] + "/job-" + std::to_string(slot);
}

Status Cgroups::prepare(uint32_t slot, uint64_t memory_bytes, uint64_t processes) {
  auto limit = [](uint64_t v, const char* none) { return v ? std::to_string(v) : none; };
  procs_.clear();
  for (size_t i = 0; i < roots_.size(); ++i) {
    std::string dir = job_dir(i, slot);
    if (Status s = make_dir(dir); !s) return s;
    procs_.push_back(dir + "/cgroup.procs");
  }
  // Values past what the kernel takes are no limit (pid_max is at most 2^22).
  if (processes >= kPidMaxLimit) processes = 0;
  if (memory_bytes >= kMemoryNoLimit) memory_bytes = 0;
  std::string mem = job_dir(roots_.size() - 1, slot);
  Status s = write_text(job_dir(0, slot) + "/pids.max", limit(processes, "max"));
  if (!s) return s;
  // Swap counts against memory_bytes too, or a job would swap instead of
  // stopping (the swap files exist only where swap accounting is on).
  if (version_ == 2) {
    s = write_text(mem + "/memory.max", limit(memory_bytes, "max"));
    if (s) (void)write_text(mem + "/memory.swap.max", memory_bytes ? "0" : "max");
  } else {
    (void)write_text(mem + "/memory.memsw.limit_in_bytes", "-1");  // memsw >= memory, always
    s = write_text(mem + "/memory.limit_in_bytes", limit(memory_bytes, "-1"));
    if (s && memory_bytes)
      (void)write_text(mem + "/memory.memsw.limit_in_bytes", std::to_string(memory_bytes));
  }
  if (!s) return s;
  if (oom_base_.size() <= slot) oom_base_.resize(slot + 1);
  oom_base_[slot] = oom_count(slot);
  procs_ptrs_.clear();
  for (const std::string& p : procs_) procs_ptrs_.push_back(p.c_str());
  procs_ptrs_.push_back(nullptr);
  return {};
}

void Cgroups::kill(uint32_t slot) const {
  if (!version_) return;
  if (version_ == 2) {
    (void)write_text(job_dir(0, slot) + "/cgroup.kill", "1");
    return;
  }
  // v1 has no cgroup.kill: kill what is listed until nothing new is (a
  // process may fork between our read and our kill; once killed it cannot).
  // pids.max bounds how many there can be. A listed pid may have exited and
  // been reused by then: pin the process (pidfd) and check it is still in
  // the job's cgroup before signalling it.
  std::string procs = job_dir(0, slot) + "/cgroup.procs";
  std::string member = job_dir(0, slot).substr(roots_[0].rfind('/'));  // "/<tree>/job-N"
  std::vector<pid_t> killed;
  for (uint32_t round = 0; round < kV1KillRounds; ++round) {
    bool any = false;
    for (pid_t p : pids_in(procs)) {
      if (std::find(killed.begin(), killed.end(), p) != killed.end()) continue;
      killed.push_back(p);
      any = true;
      UniqueFd pidfd(int(::syscall(SYS_pidfd_open, p, 0)));
      bool no_pidfd = !pidfd && (errno == ENOSYS || errno == EPERM);      // old kernel, seccomp
      if ((!pidfd && !no_pidfd) || !in_pids_cgroup(p, member)) continue;  // gone, or not ours
      if (no_pidfd) {
        ::kill(p, SIGKILL);  // without a pidfd, the check above is all there is
      } else {
        ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
      }
    }
    if (!any) return;
  }
}

uint64_t Cgroups::oom_count(uint32_t slot) const {
  return oom_count_in(job_dir(roots_.size() - 1, slot));
}

uint64_t Cgroups::oom_count_in(const std::string& dir) const {
  std::string file = dir + (version_ == 2 ? "/memory.events" : "/memory.oom_control");
  std::istringstream in(read_text(file));
  for (std::string key; in >> key;) {
    uint64_t value = 0;
    if (!(in >> value)) break;
    if (key == "oom_kill") return value;
  }
  return 0;
}

bool Cgroups::oom_killed(uint32_t slot) const {
  if (!version_) return false;
  return oom_count(slot) > (slot < oom_base_.size() ? oom_base_[slot] : 0);
}

std::string Cgroups::prepare_role(std::string_view role) const {
  if (!version_ || role.empty()) return {};
  std::string dir = memory_root() + "/role-" + std::string(role);
  if (!make_dir(dir)) return {};
  return dir + "/cgroup.procs";
}

uint64_t Cgroups::role_oom_kills(std::string_view role) const {
  if (!version_ || role.empty()) return 0;
  return oom_count_in(memory_root() + "/role-" + std::string(role));
}

void Cgroups::release(uint32_t slot) const {
  for (size_t i = 0; i < roots_.size(); ++i) ::rmdir(job_dir(i, slot).c_str());
}

void Cgroups::remove() const {
  for (const std::string& root : roots_) {
    std::vector<uint32_t> slots;
    std::vector<std::string> roles;
    if (DIR* d = ::opendir(root.c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (std::strncmp(e->d_name, "job-", 4) == 0)
          slots.push_back(uint32_t(std::strtoul(e->d_name + 4, nullptr, 10)));
        if (std::strncmp(e->d_name, "role-", 5) == 0) roles.push_back(root + "/" + e->d_name);
      }
      ::closedir(d);
    }
    for (const std::string& dir : roles) ::rmdir(dir.c_str());  // the roles are gone by now
    for (uint32_t slot : slots) {
      if (root == roots_[0]) kill(slot);
      std::string dir = root + "/job-" + std::to_string(slot);
      for (int i = 0; i < kRmdirTries && ::rmdir(dir.c_str()) != 0 && errno == EBUSY; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::rmdir(root.c_str());
  }
}

}  // namespace sp::isolation
