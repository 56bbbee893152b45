// The shm session table (shm::SessionTable) on a real segment.
#include <catch2/catch.hpp>

#include "shm/session_table.h"
#include "tests/shm_fixture.h"

using sp::EnvPairs;
using sp::shm::SessionError;
using sp::shm::SessionTable;
using sp::test::TestSegment;

TEST_CASE("a session keeps its name and env in order and can be found by id", "[sessions]") {
  TestSegment seg;
  SessionTable sessions(*seg);
  auto id = sessions.create("ci", {{"B", "2"}, {"A", "x=y"}});
  REQUIRE(std::holds_alternative<std::string>(id));
  const std::string& sid = std::get<std::string>(id);
  CHECK(sid.size() == 36);
  auto env = sessions.env_of(sid);
  REQUIRE(env);
  CHECK(env->env == EnvPairs{{"B", "2"}, {"A", "x=y"}});
  CHECK(env->secrets.empty());
  auto list = sessions.list();
  REQUIRE(list.size() == 1);
  CHECK(list[0].name == "ci");
  CHECK(sessions.count() == 1);
  CHECK(sessions.destroy(sid));
  CHECK_FALSE(sessions.env_of(sid));
  // Secrets follow the env in the blob; a listing counts them and never
  // shows a value, not even one that is in the env too.
  auto with = sessions.create("s", {{"TOKEN", "tok-1234"}, {"X", "1"}},
                              {"tok-1234", std::string("b\0in\n", 5)});
  REQUIRE(std::holds_alternative<std::string>(with));
  auto both = sessions.env_of(std::get<std::string>(with));
  REQUIRE(both);
  CHECK(both->env == EnvPairs{{"TOKEN", "tok-1234"}, {"X", "1"}});
  CHECK(both->secrets == std::vector<std::string>{"tok-1234", std::string("b\0in\n", 5)});
  CHECK(sessions.secrets_of(std::get<std::string>(with)) == both->secrets);
  CHECK(sessions.secrets_of("no-such-session").empty());
  list = sessions.list();
  REQUIRE(list.size() == 1);
  CHECK(list[0].secrets == 2);
  CHECK(list[0].env == EnvPairs{{"TOKEN", "***"}, {"X", "1"}});
  CHECK(sessions.destroy(std::get<std::string>(with)));
  CHECK_FALSE(sessions.destroy(sid));
}

TEST_CASE("sessions are refused past their bounds, each with its own reason", "[sessions]") {
  TestSegment seg;  // 4 slots, 1024 env bytes each
  SessionTable sessions(*seg);
  auto long_name = sessions.create(std::string(SessionTable::max_name_bytes() + 1, 'n'), {});
  CHECK(std::get<SessionError>(long_name) == SessionError::kNameTooLong);
  auto big = sessions.create("big", {{"V", std::string(1023, 'v')}});
  CHECK(std::get<SessionError>(big) == SessionError::kEnvTooLarge);
  for (int i = 0; i < 4; ++i)
    REQUIRE(std::holds_alternative<std::string>(sessions.create("s", {})));
  CHECK(std::get<SessionError>(sessions.create("s", {})) == SessionError::kTableFull);
}

TEST_CASE("a session a dead frontend left half-written is freed by recovery", "[sessions]") {
  TestSegment seg;
  SessionTable sessions(*seg);
  seg->session(0).state.store(uint32_t(sp::shm::SessionState::kWriting));
  sessions.recover();
  CHECK(seg->session(0).state.load() == uint32_t(sp::shm::SessionState::kFree));
  CHECK(sessions.count() == 0);
}
