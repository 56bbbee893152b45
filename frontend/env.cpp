#include "frontend/env.h"

#include <cstring>

namespace sp::frontend {

EnvPairs base_env(char** env, const std::vector<std::string>& extra_names) {
  EnvPairs out;
  auto copy = [&](std::string_view name) {
    for (char** e = env; e && *e; ++e) {
      if (std::strncmp(*e, name.data(), name.size()) == 0 && (*e)[name.size()] == '=') {
        out.emplace_back(std::string(name), *e + name.size() + 1);
        return;
      }
    }
  };
  for (const char* name : kBaseEnvNames) copy(name);
  for (const std::string& name : extra_names) copy(name);
  bool has_path = false;
  for (auto& [k, v] : out) has_path |= k == "PATH";
  if (!has_path) out.emplace_back("PATH", "/usr/local/bin:/usr/bin:/bin");
  return out;
}

void merge_env(std::vector<std::string>& out, const EnvPairs& base,
               std::initializer_list<const EnvPairs*> overlays) {
  out.clear();
  auto put = [&out](const std::string& k, const std::string& v) {
    for (std::string& e : out)
      if (e.size() > k.size() && e[k.size()] == '=' && e.compare(0, k.size(), k) == 0) {
        e.replace(k.size() + 1, std::string::npos, v);
        return;
      }
    out.push_back(k + "=" + v);
  };
  for (auto& [k, v] : base) put(k, v);
  for (const EnvPairs* o : overlays)
    for (auto& [k, v] : *o) put(k, v);
}

}  // namespace sp::frontend
