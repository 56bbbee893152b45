// MessagePack-RPC through the real shell-poold: the dialect chosen by a
// connection's first byte, the same methods with bytes as bin, streams as
// notifications, notifications never answered, pipelining, errors as
// {code, message, data}; hostile frames (too deep, too long, cut short,
// wrong types, bytes MessagePack never uses; a frame a few bytes at a
// time); a worker killed under a
// call; and unmodified third-party clients (python3-msgpack, pynvim's
// msgpack-rpc session, Neovim's own rpcrequest()).
#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <vector>

#include "frontend/codec/msgpack_codec.h"
#include "tests/daemon_harness.h"
#include "tests/sshd_fixture.h"

using namespace sp::test;
using Catch::Contains;
using sp::rpc::Array;
using sp::rpc::Bytes;
using sp::rpc::Object;
using sp::rpc::Value;

namespace {

std::string frame(const Value& v) {
  std::string out;
  sp::rpc::append_msgpack(out, v);
  return out;
}

std::string request(uint32_t id, std::string_view method, Value params) {
  return frame(Array{0, id, std::string(method), std::move(params)});
}

// The next frame, read as a Value; a failed REQUIRE if there is none.
Value next(Client& c, double timeout_s = 30) {
  auto f = c.read_frame(timeout_s);
  REQUIRE(f);
  auto v = sp::rpc::parse_msgpack(*f);
  REQUIRE(v);
  return *v;
}

// [1, id, error, result] for `id`, checked.
Array response(Client& c, uint32_t id) {
  Value v = next(c);
  REQUIRE(v.is_array());
  Array a = v.get_array();
  REQUIRE(a.size() == 4);
  CHECK(a[0] == Value(1));
  CHECK(a[1] == Value(int64_t(id)));
  return a;
}

Object result(Client& c, uint32_t id) {
  Array a = response(c, id);
  INFO(frame(a[2]));
  REQUIRE(a[2].is_null());
  REQUIRE(a[3].is_object());
  return a[3].get_object();
}

const Value& at(const Object& o, std::string_view key) {
  const Value* v = o.if_contains(key);
  REQUIRE(v);
  return *v;
}

std::string all_bytes() {
  std::string b;
  for (int i = 0; i < 256; ++i) b.push_back(char(i));
  return b;
}

}  // namespace

TEST_CASE("MessagePack-RPC reaches the same methods, with bytes as bin", "[msgpack]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());

  // params: [], [map], or the map itself; any uint32 msgid comes back.
  REQUIRE(c.send_raw(request(4294967295u, "health", Array{})));
  CHECK(at(result(c, 4294967295u), "status") == Value("ok"));
  const std::string bytes = all_bytes();
  REQUIRE(c.send_raw(
      request(1, "execute",
              Array{Object{{"command", "cat; cat >&2 < /dev/null"}, {"stdin", Bytes{bytes}}}})));
  Object r = result(c, 1);
  CHECK(at(r, "stdout") == Value(Bytes{bytes}));  // exact, never U+FFFD or base64
  CHECK(at(r, "status") == Value("exited"));
  CHECK(at(r, "encoding") == Value("binary"));
  REQUIRE(c.send_raw(
      request(2, "execute", Object{{"command", "printf '\\377'"}, {"output_encoding", "base64"}})));
  CHECK(at(result(c, 2), "stdout") == Value("/w=="));

  // A stream: its chunks as notifications naming the call, then its answer.
  REQUIRE(c.send_raw(
      request(3, "execute_stream", Array{Object{{"command", "printf 'a\\0b'; printf 'e' >&2"}}})));
  std::string out, err;
  for (;;) {
    Value v = next(c);
    Array& a = v.get_array();
    if (a[0] == Value(1)) {
      CHECK(a[1] == Value(3));
      CHECK(at(a[3].get_object(), "type") == Value("exit"));
      break;
    }
    REQUIRE(a.size() == 3);
    CHECK(a[0] == Value(2));
    CHECK(a[1] == Value("stream"));
    const Array& args = a[2].get_array();
    CHECK(args[0] == Value(3));
    const Object& chunk = args[1].get_object();
    (at(chunk, "type") == Value("stdout") ? out : err) += at(chunk, "data").get_bytes();
  }
  CHECK(out == std::string("a\0b", 3));
  CHECK(err == "e");

  // A notification runs and is never answered; pipelined calls all are.
  TempDir dir;
  const std::string mark = dir.path() + "/ran";
  std::string burst = frame(Array{2, "execute", Array{Object{{"command", "touch " + mark}}}});
  for (uint32_t id = 10; id < 13; ++id)
    burst += request(id, "execute", Array{Object{{"command", "echo " + std::to_string(id)}}});
  REQUIRE(c.send_raw(burst));
  std::vector<std::string> seen;
  for (int i = 0; i < 3; ++i) {
    Array a = next(c).get_array();
    REQUIRE(a[0] == Value(1));
    seen.emplace_back(at(a[3].get_object(), "stdout").get_bytes());
  }
  std::sort(seen.begin(), seen.end());
  CHECK(seen == std::vector<std::string>{"10\n", "11\n", "12\n"});
  CHECK(wait_until([&] { return file_exists(mark); }, 10));

  // Detached output and workspace files as bin.
  REQUIRE(c.send_raw(request(20, "job_submit", Array{Object{{"command", "printf '\\0\\377'"}}})));
  Object sub = result(c, 20);
  const Value job = at(sub, "job_id");
  REQUIRE(c.send_raw(request(21, "job_wait", Array{Object{{"job_id", job}, {"timeout", 20}}})));
  CHECK(at(result(c, 21), "stdout") == Value(Bytes{std::string("\0\377", 2)}));
  REQUIRE(c.send_raw(request(22, "job_output", Array{Object{{"job_id", job}}})));
  CHECK(at(result(c, 22), "data") == Value(Bytes{std::string("\0\377", 2)}));

  // Errors are {code, message, data}; a JSON-RPC client beside it is unaffected.
  REQUIRE(c.send_raw(request(30, "no_such_method", Array{})));
  Array e = response(c, 30);
  CHECK(at(e[2].get_object(), "code") == Value(-32601));
  CHECK(e[3].is_null());
  REQUIRE(c.send_raw(request(31, "execute", Array{Object{{"command", 5}}})));
  CHECK(at(response(c, 31)[2].get_object(), "code") == Value(-32602));
  Client j(d.socket());
  CHECK(j.call("health", json::object{}).contains("result"));
}

// Bin chunks are framed straight from the output ring: megabytes of random
// bytes on both streams, through many wraps of 64 KiB rings (and their pad
// chunks), arrive exact and in order.
TEST_CASE("a MessagePack-RPC stream of binary output arrives exact", "[msgpack]") {
  START_DAEMON(d, {"--workers", "1"});
  TempDir dir;
  const std::string file = dir.path() + "/random";
  {
    std::ifstream in("/dev/urandom", std::ios::binary);
    std::string bytes(3'000'001, '\0');  // odd: chunks end off the ring's 8-byte alignment
    in.read(bytes.data(), std::streamsize(bytes.size()));
    REQUIRE(in);
    std::ofstream(file, std::ios::binary) << bytes;
  }
  std::ifstream in(file, std::ios::binary);
  const std::string want{std::istreambuf_iterator<char>(in), {}};
  REQUIRE(want.size() == 3'000'001);
  Client c(d.socket());
  REQUIRE(c.send_raw(request(
      1, "execute_stream", Array{Object{{"command", "cat " + file + "; cat " + file + " >&2"}}})));
  std::string out, err;
  for (;;) {
    Value v = next(c);
    Array& a = v.get_array();
    if (a[0] == Value(1)) {
      REQUIRE(a[3].is_object());
      CHECK(at(a[3].get_object(), "exit_code") == Value(0));
      break;
    }
    REQUIRE(a[1] == Value("stream"));
    REQUIRE(a[2].get_array()[0] == Value(1));
    const Object& chunk = a[2].get_array()[1].get_object();
    REQUIRE(at(chunk, "data").is_bytes());
    (at(chunk, "type") == Value("stdout") ? out : err) += at(chunk, "data").get_bytes();
  }
  CHECK(out.size() == want.size());
  CHECK(err.size() == want.size());
  CHECK((out == want && err == want));
}

TEST_CASE("hostile MessagePack: a clear error, then the connection closes when it must",
          "[msgpack]") {
  START_DAEMON(d, {"--workers", "1", "--max-line", "4096"});
  // The error answer; its msgid is the request's where that could be read.
  auto error_of = [](Client& c, Value id = nullptr) {
    Array a = next(c).get_array();
    REQUIRE(a.size() == 4);
    CHECK(a[1] == id);
    return a[2].get_object();
  };

  // A whole frame that is wrong is answered, and the next one is read.
  {
    Client c(d.socket());
    std::string bad_utf8 = frame(Array{0, 1, "health", Array{}});
    bad_utf8.back() = char(0x91);  // [] -> [ "\xff" ] below
    bad_utf8 += "\xa1\xff";
    REQUIRE(c.send_raw(bad_utf8));  // answered under its msgid
    CHECK_THAT(at(error_of(c, 1), "message").get_string(), Contains("not UTF-8"));
    // A notification's error is never answered: the next frame answers the next call.
    REQUIRE(c.send_raw(frame(Array{2, "execute", Array{Object{{"command", "\xff"}}}}) +
                       frame(Array{2, 5, Array{}}) + request(8, "health", Array{})));
    CHECK(at(result(c, 8), "status") == Value("ok"));
    for (const Value& wrong :
         {Value(Array{0, "x", "health", Array{}}), Value(Array{1, 1, nullptr, nullptr}),
          Value(Array{7}), Value(Object{{"a", 1}})}) {
      REQUIRE(c.send_raw(frame(wrong)));
      CHECK(at(error_of(c), "code") == Value(-32600));
    }
    REQUIRE(c.send_raw(frame(Array{0, 9, 5, Array{}})));  // a method that is no name
    CHECK(at(error_of(c, 9), "code") == Value(-32600));
    REQUIRE(c.send_raw(request(2, "health", Array{})));
    CHECK(at(result(c, 2), "status") == Value("ok"));
  }
  // A frame that comes a few bytes at a time is scanned on from where it stopped: each
  // piece is read on its own (a call on another connection is answered between them).
  {
    Client c(d.socket()), other(d.socket());
    const std::string f = request(
        6, "execute",
        Array{Object{{"command", "echo"}, {"args", Array{"a", "b", "c"}}, {"shell", false}}});
    for (size_t pos = 0; pos < f.size(); pos += 7) {
      REQUIRE(c.send_raw(f.substr(pos, 7)));
      REQUIRE(other.send_raw(request(uint32_t(100 + pos), "health", Array{})));
      CHECK(at(result(other, uint32_t(100 + pos)), "status") == Value("ok"));
    }
    CHECK(at(result(c, 6), "stdout") == Value(Bytes{"a b c\n"}));
  }
  // Frames whose end cannot be found, or past --max-line: answered, then closed.
  std::vector<std::string> fatal = {
      std::string(100, char(0x91)) + "\xc0",                                // 100 arrays deep
      std::string("\x91\xdd\xff\xff\xff\xff") + std::string(5000, '\xc0'),  // 4G elements
      std::string("\x91\xdb\xff\xff\xff\xff") + std::string(5000, 'a'),     // a 4 GiB str
      std::string("\x92\xc1\xc0"),                                          // 0xc1
      std::string("\x91\xd4\x01\x02"),                                      // an ext value
  };
  for (const std::string& f : fatal) {
    Client c(d.socket());
    REQUIRE(c.send_raw(f));
    Object err = error_of(c);
    CHECK((at(err, "code") == Value(-32700) || at(err, "code") == Value(-32002)));
    CHECK_FALSE(c.read_frame(10));
    CHECK(c.eof());
  }
  // Cut short, then the client's EOF.
  Client c(d.socket());
  std::string half = request(3, "health", Array{});
  REQUIRE(c.send_raw(half.substr(0, half.size() - 1)));
  c.shutdown_write();
  CHECK_THAT(at(error_of(c), "message").get_string(), Contains("cut short"));
  // The daemon is whole.
  Client ok(d.socket());
  REQUIRE(ok.send_raw(request(4, "health", Array{})));
  CHECK(at(result(ok, 4), "status") == Value("ok"));
}

TEST_CASE("MessagePack-RPC calls held at --max-inflight are read when room comes", "[msgpack]") {
  START_DAEMON(d, {"--workers", "1", "--max-inflight", "1"});
  Client c(d.socket());
  // Twelve calls in one write (msgid 10 is a newline byte: nothing cuts at it).
  std::string burst;
  for (uint32_t id = 1; id <= 12; ++id)
    burst += request(id, "execute", Array{Object{{"command", "echo " + std::to_string(id)}}});
  REQUIRE(c.send_raw(burst));
  for (uint32_t id = 1; id <= 12; ++id)
    CHECK(at(result(c, id), "stdout") == Value(Bytes{std::to_string(id) + "\n"}));
  // Numbers come as MessagePack uints from most clients: a signal, a mode.
  REQUIRE(c.send_raw(request(13, "job_submit", Array{Object{{"command", "exec sleep 4321"}}})));
  const Value job = at(result(c, 13), "job_id");
  REQUIRE(c.send_raw(request(14, "job_cancel", Array{Object{{"job_id", job}, {"signal", 9}}})));
  result(c, 14);
  REQUIRE(c.send_raw(request(15, "job_wait", Array{Object{{"job_id", job}, {"timeout", 20}}})));
  CHECK(at(result(c, 15), "state") == Value("cancelled"));
}

TEST_CASE("a worker killed under a MessagePack-RPC call: the call ends lost", "[msgpack]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  REQUIRE(c.send_raw(request(1, "execute", Array{Object{{"command", "exec sleep 4320"}}})));
  REQUIRE(wait_until([&] { return !pids_matching("sleep 4320").empty(); }, 20));
  const std::vector<pid_t> workers = d.worker_pids();
  REQUIRE(workers.size() == 1);
  REQUIRE(::kill(workers[0], SIGKILL) == 0);
  CHECK(at(result(c, 1), "status") == Value("lost"));
  REQUIRE(c.send_raw(request(2, "execute", Array{Object{{"command", "echo after"}}})));
  CHECK(at(result(c, 2), "stdout") == Value(Bytes{"after\n"}));
}

TEST_CASE("third-party MessagePack-RPC clients work unmodified", "[msgpack]") {
  START_DAEMON(d, {"--workers", "1"});
  TempDir dir;
  // python3-msgpack over a plain socket.
  const std::string plain = R"(import socket, sys, msgpack
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(msgpack.packb([0, 7, "execute", [{"command": "cat", "stdin": bytes(range(256))}]]))
u = msgpack.Unpacker(raw=False)
while True:
    u.feed(s.recv(65536))
    for m in u:
        assert m[0] == 1 and m[1] == 7 and m[2] is None, m
        assert m[3]["stdout"] == bytes(range(256)), m
        print("plain ok"); sys.exit(0)
)";
  ToolRun py = run_tool({"/usr/bin/python3", "-c", plain, d.socket()}, dir.path());
  INFO(py.describe());
  CHECK(py.out == "plain ok\n");

  // pynvim's msgpack-rpc session (the library Neovim's Python clients use).
  const std::string pynvim = R"(import sys
from pynvim.msgpack_rpc import socket_session
s = socket_session(sys.argv[1])
s.error_wrapper = lambda e: Exception(e)
r = s.request("execute", {"command": "printf 'x\\377y'"})
assert r["stdout"] == b"x\xffy", r
try:
    s.request("no_such_method", {})
except Exception as e:
    assert e.args[0]["code"] == -32601, e.args
print("pynvim ok")
)";
  ToolRun pn = run_tool({"/usr/bin/python3", "-c", pynvim, d.socket()}, dir.path());
  INFO(pn.describe());
  CHECK(pn.out == "pynvim ok\n");

  // Neovim itself: sockconnect() with rpc, rpcrequest().
  const std::string script = dir.path() + "/t.vim", out = dir.path() + "/nvim.out";
  std::ofstream(script) << "let ch = sockconnect('pipe', '" << d.socket()
                        << "', {'rpc': v:true})\n"
                           "let r = rpcrequest(ch, 'execute', {'command': 'echo from-nvim'})\n"
                           "call writefile([r.status, trim(r.stdout)], '"
                        << out << "')\nqa!\n";
  ToolRun nv = run_tool({"/usr/bin/nvim", "--headless", "-u", "NONE", "-S", script}, dir.path());
  INFO(nv.describe());
  std::ifstream got(out);
  std::string status, text;
  std::getline(got, status);
  std::getline(got, text);
  CHECK(status == "exited");
  CHECK(text == "from-nvim");
}
