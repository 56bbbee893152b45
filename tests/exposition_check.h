// A strict reader of the Prometheus text exposition format 0.0.4, for the
// tests of `metrics` and --metrics-listen: it parses every line and lists
// each rule the text breaks (an empty list: it passes), stricter than
// Prometheus itself where the format leaves room:
//   - every family has exactly one HELP and one TYPE, both before its samples;
//   - a family's samples are contiguous, no sample (name + labels) repeats;
//   - names and label names are valid, label values properly quoted;
//   - counters are named *_total, have only that sample name, and are >= 0;
//   - histograms have, per label set, buckets in increasing `le` order with
//     non-decreasing counts, ending in le="+Inf" equal to _count, and a _sum;
//   - the text ends with a newline.
#pragma once

#include <cmath>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace sp::test {

struct Exposition {
  std::vector<std::string> problems;
  std::map<std::string, double> samples;        // "name{labels as written}" -> value
  std::map<std::string, std::string> types;     // family -> type
  double value(const std::string& key) const {  // NaN if absent
    auto it = samples.find(key);
    return it == samples.end() ? std::nan("") : it->second;
  }
};

inline Exposition check_exposition(const std::string& text) {
  Exposition e;
  auto fail = [&](size_t line, const std::string& why) {
    e.problems.push_back("line " + std::to_string(line) + ": " + why);
  };
  if (text.empty() || text.back() != '\n') e.problems.push_back("the text does not end in \\n");
  static const std::regex comment(R"(# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*))");
  static const std::regex sample(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([^ ]+)( -?[0-9]+)?)");
  static const std::regex label(R"(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)\"(,|$))");
  std::map<std::string, std::set<std::string>> seen_comments;  // family -> {HELP, TYPE}
  std::set<std::string> finished;                              // families whose samples ended
  std::string current;                                         // the family of the last sample
  struct Hist {
    std::map<std::string, std::vector<std::pair<double, double>>> buckets;  // labels -> (le, n)
    std::map<std::string, double> count, sum;
  };
  std::map<std::string, Hist> hists;
  std::istringstream in(text);
  std::string l;
  size_t n = 0;
  while (std::getline(in, l)) {
    ++n;
    std::smatch m;
    if (l.empty()) continue;
    if (l[0] == '#') {
      if (!std::regex_match(l, m, comment)) {
        if (l.rfind("# HELP", 0) == 0 || l.rfind("# TYPE", 0) == 0) fail(n, "malformed: " + l);
        continue;
      }
      const std::string kind = m[1], fam = m[2];
      if (!seen_comments[fam].insert(kind).second) fail(n, "second " + kind + " for " + fam);
      if (finished.count(fam) || current == fam) fail(n, kind + " after samples of " + fam);
      if (kind == "TYPE") {
        static const std::set<std::string> types{"counter", "gauge", "histogram", "summary",
                                                 "untyped"};
        if (!types.count(m[3])) fail(n, "unknown type " + std::string(m[3]));
        e.types[fam] = m[3];
        if (m[3] == "counter" && (fam.size() < 6 || fam.compare(fam.size() - 6, 6, "_total") != 0))
          fail(n, "counter " + fam + " is not named *_total");
      }
      continue;
    }
    if (!std::regex_match(l, m, sample)) {
      fail(n, "malformed sample: " + l);
      continue;
    }
    const std::string name = m[1], labels = m[3], value_text = m[4];
    // Its family: the name, or the histogram it belongs to.
    std::string fam = name, suffix;
    for (const char* s : {"_bucket", "_sum", "_count"}) {
      const std::string sx = s;
      if (name.size() > sx.size() && name.compare(name.size() - sx.size(), sx.size(), sx) == 0 &&
          e.types.count(name.substr(0, name.size() - sx.size())) &&
          e.types[name.substr(0, name.size() - sx.size())] == "histogram") {
        fam = name.substr(0, name.size() - sx.size());
        suffix = sx;
      }
    }
    if (!e.types.count(fam)) fail(n, "sample of " + fam + " before (or without) its TYPE");
    if (!seen_comments[fam].count("HELP")) fail(n, "sample of " + fam + " without its HELP");
    if (fam != current) {
      if (finished.count(fam)) fail(n, "samples of " + fam + " are not contiguous");
      if (!current.empty()) finished.insert(current);
      current = fam;
    }
    // Labels: each valid, le pulled out for histograms.
    std::string rest = labels, without_le, le;
    std::smatch lm;
    while (!rest.empty()) {
      if (!std::regex_search(rest, lm, label) || lm.position(0) != 0) {
        fail(n, "malformed labels: {" + labels + "}");
        break;
      }
      if (lm[1] == "le")
        le = lm[2];
      else
        without_le += lm[0].str();
      rest = lm.suffix();
    }
    char* end = nullptr;
    double v = std::strtod(value_text.c_str(), &end);
    if (value_text == "+Inf")
      v = INFINITY;
    else if (value_text == "-Inf")
      v = -INFINITY;
    else if (value_text == "NaN")
      v = NAN;
    else if (!end || *end)
      fail(n, "not a number: " + value_text);
    const std::string key = name + (labels.empty() ? "" : "{" + labels + "}");
    if (!e.samples.emplace(key, v).second) fail(n, "repeated sample " + key);
    const std::string& type = e.types[fam];
    if (type == "counter" && (name != fam || !(v >= 0))) fail(n, "bad counter sample " + key);
    if (type == "histogram") {
      Hist& h = hists[fam];
      if (suffix == "_bucket") {
        if (le.empty()) fail(n, "bucket without le: " + key);
        double bound = le == "+Inf" ? INFINITY : std::strtod(le.c_str(), nullptr);
        h.buckets[without_le].emplace_back(bound, v);
      } else if (suffix == "_count") {
        h.count[without_le] = v;
      } else if (suffix == "_sum") {
        h.sum[without_le] = v;
      } else {
        fail(n, "histogram sample neither _bucket, _sum nor _count: " + key);
      }
    }
  }
  for (const auto& [fam, h] : hists) {
    for (const auto& [labels, buckets] : h.buckets) {
      const std::string at = fam + "{" + labels + "}";
      for (size_t i = 1; i < buckets.size(); ++i) {
        if (!(buckets[i].first > buckets[i - 1].first))
          e.problems.push_back(at + ": le not increasing");
        if (buckets[i].second < buckets[i - 1].second)
          e.problems.push_back(at + ": bucket counts are not cumulative");
      }
      if (buckets.empty() || !std::isinf(buckets.back().first))
        e.problems.push_back(at + ": the last bucket is not le=\"+Inf\"");
      else if (!h.count.count(labels) || h.count.at(labels) != buckets.back().second)
        e.problems.push_back(at + ": +Inf bucket differs from _count");
      if (!h.sum.count(labels)) e.problems.push_back(at + ": no _sum");
    }
    if (h.buckets.empty()) e.problems.push_back(fam + ": a histogram without buckets");
  }
  return e;
}

}  // namespace sp::test
