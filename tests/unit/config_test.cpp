// The config file of `lbd start` (userspace/config/app_config.h): a good file gives the AppConfigs
// and the `lbd run` command lines it says; a bad one gives one ConfigError line naming the file,
// the line and the key, whatever is wrong with it. The example shipped in examples/ loads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <string>
#include <vector>

#include "common/result.h"
#include "config/app_config.h"
#include "config/values.h"
#include "support/temp_dir.h"

namespace lbd::config {
namespace {

using Argv = std::vector<std::string>;

// The message of the ConfigError `text` raises, or "" when it loads.
std::string error_of(const std::string& text, const std::string& path = "lbd.toml") {
  try {
    parse_config(text, path);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

// --- good files -----------------------------------------------------------------------------------

TEST(ConfigFile, MinimalAppGivesTheShortestCommandLine) {
  FileConfig file = parse_config(R"(
[[app]]
name = "web"
command = "./server"
listen = "8080"
)",
                                 "lbd.toml");
  ASSERT_EQ(file.apps.size(), 1u);
  const AppConfig& app = file.apps[0];
  EXPECT_EQ(app.line, 2);
  EXPECT_EQ(app.cwd, ".");  // the config file's directory
  EXPECT_EQ(lbd_run_arguments(app, file),
            (Argv{"run", "--name", "web", "--listen", "0.0.0.0:8080", "--cwd", ".", "--control",
                  "/run/lbd/web.sock", "--", "./server"}));
}

TEST(ConfigFile, CommandAsAStringOrAsAListOfProgramAndArguments) {
  FileConfig file = parse_config(R"(
[[app]]
name = "one"
command = "node"
listen = "127.0.0.1:1"

[[app]]
name = "two"
command = ["python3", "-m", "http.server", "", "--bind=fd://3"]
listen = "127.0.0.1:2"
)",
                                 "lbd.toml");
  ASSERT_EQ(file.apps.size(), 2u);
  EXPECT_EQ(file.apps[0].command, "node");
  EXPECT_TRUE(file.apps[0].args.empty());
  EXPECT_EQ(file.apps[1].command, "python3");
  EXPECT_EQ(file.apps[1].args, (Argv{"-m", "http.server", "", "--bind=fd://3"}));
  Argv argv = lbd_run_arguments(file.apps[1], file);
  Argv tail(argv.end() - 6, argv.end());
  EXPECT_EQ(tail, (Argv{"--", "python3", "-m", "http.server", "", "--bind=fd://3"}));
}

TEST(ConfigFile, EveryAppKeyReachesTheCommandLineInOrder) {
  FileConfig file = parse_config(R"(
[[app]]
name = "web.v2_x-1"
command = ["gunicorn", "--bind", "fd://3", "app:app"]
listen = ["0.0.0.0:8080", "[::]:8080", ":8081"]
workers = 4
cpus = "0-1,3"
pin = false
policy = "rr"
mode = "reuseport"
cwd = "/srv/web"
env = { ZED = "last in the alphabet", ALPHA = "a=b c", PORT = 8080 }
max_memory = "512M"
kill_timeout = 2.5
ready_delay = 0.25
ready_timeout = 60
wait_ready = true
max_restarts = 0
restart_window = 120
log_level = "debug"
admin = "127.0.0.1:9180"
log = { dir = "/var/log/web", max_size = 1048576, files = 7 }
)",
                                 "/etc/lbd/lbd.toml");
  const AppConfig& app = file.apps.at(0);
  // env keeps the file's order, not the alphabet's.
  EXPECT_EQ(app.env, (std::vector<std::pair<std::string, std::string>>{
                         {"ZED", "last in the alphabet"}, {"ALPHA", "a=b c"}, {"PORT", "8080"}}));
  EXPECT_EQ(lbd_run_arguments(app, file),
            (Argv{"run", "--name", "web.v2_x-1",
                  "--instances", "4",
                  "--listen", "0.0.0.0:8080", "--listen", "[::]:8080", "--listen", "0.0.0.0:8081",
                  "--cpus", "0-1,3",
                  "--no-pin",
                  "--policy", "rr",
                  "--mode", "reuseport",
                  "--env", "ZED=last in the alphabet", "--env", "ALPHA=a=b c", "--env", "PORT=8080",
                  "--cwd", "/srv/web",
                  "--max-memory", "512M",
                  "--kill-timeout", "2.5",
                  "--ready-delay", "0.25",
                  "--ready-timeout", "60",
                  "--wait-ready",
                  "--max-restarts", "0",
                  "--restart-window", "120",
                  "--log-dir", "/var/log/web",
                  "--log-max-size", "1M",
                  "--log-files", "7",
                  "--log-level", "debug",
                  "--control", "/run/lbd/web.v2_x-1.sock",
                  "--admin", "127.0.0.1:9180",
                  "--", "gunicorn", "--bind", "fd://3", "app:app"}));
}

TEST(ConfigFile, WorkersMaxMinusNIsPassedToLbdRun) {
  FileConfig file = parse_config("[[app]]\nname = \"a\"\ncommand = \"a\"\nlisten = \"127.0.0.1:1000\"\n"
                                 "workers = \"max-1\"\n",
                                 "lbd.toml");
  EXPECT_EQ(file.apps.at(0).instances, "max-1");
}

TEST(ConfigFile, LbdTableGivesDefaultsThatAnAppOverrides) {
  FileConfig file = parse_config(R"(
[lbd]
control_dir = "/tmp/ctl/"
log_dir = "logs"
workers = "max"
policy = "rr"
kill_timeout = 3
env = { TZ = "UTC", MODE = "default" }
log = { max_size = "10M", files = 4 }

[[app]]
name = "a"
command = "a"
listen = "127.0.0.1:1000"

[[app]]
name = "b"
command = "b"
listen = "127.0.0.1:2000"
policy = "least"
workers = 1
env = { MODE = "b's own", EXTRA = "1" }
log = { dir = "/b-logs", files = 2 }
)",
                                 "conf/lbd.toml");
  EXPECT_EQ(file.control_dir, "/tmp/ctl");
  EXPECT_EQ(file.log_dir, "conf/logs");
  const AppConfig& a = file.apps.at(0);
  const AppConfig& b = file.apps.at(1);
  EXPECT_EQ(a.instances, "max");
  EXPECT_EQ(a.policy, "rr");
  EXPECT_EQ(a.kill_timeout_s, 3.0);
  EXPECT_EQ(a.env, (std::vector<std::pair<std::string, std::string>>{{"TZ", "UTC"}, {"MODE", "default"}}));
  EXPECT_EQ(a.log_max_bytes, 10u << 20);
  EXPECT_EQ(a.log_files, 4u);
  EXPECT_EQ(a.cwd, "conf");
  EXPECT_EQ(app_log_dir(a, file), "conf/logs");  // lbd run writes a.log there
  EXPECT_EQ(control_socket_path(a, file), "/tmp/ctl/a.sock");

  EXPECT_EQ(b.instances, "1");
  EXPECT_EQ(b.policy, "least");
  EXPECT_EQ(b.kill_timeout_s, 3.0);
  EXPECT_EQ(b.env, (std::vector<std::pair<std::string, std::string>>{
                       {"TZ", "UTC"}, {"MODE", "b's own"}, {"EXTRA", "1"}}));
  EXPECT_EQ(b.log_max_bytes, 10u << 20);
  EXPECT_EQ(b.log_files, 2u);
  EXPECT_EQ(app_log_dir(b, file), "/b-logs");

  // lbd start may move the control sockets (tests do) after loading.
  file.control_dir = "/tmp/x";
  Argv argv = lbd_run_arguments(a, file);
  auto control = std::find(argv.begin(), argv.end(), "--control");
  ASSERT_NE(control, argv.end());
  EXPECT_EQ(*(control + 1), "/tmp/x/a.sock");
}

TEST(ConfigFile, RelativePathsAreRelativeToTheFilesDirectory) {
  const char* text = R"(
[lbd]
control_dir = "run"
[[app]]
name = "web"
command = "./server"   # the program is left alone: lbd run looks it up
listen = "127.0.0.1:0"
cwd = "../srv/./web/"
log = { dir = "-logs" }
)";
  FileConfig file = parse_config(text, "/etc/lbd/lbd.toml");
  EXPECT_EQ(file.control_dir, "/etc/lbd/run");
  EXPECT_EQ(file.apps[0].cwd, "/etc/srv/web");
  EXPECT_EQ(file.apps[0].command, "./server");
  EXPECT_EQ(file.apps[0].log_dir, "/etc/lbd/-logs");
  EXPECT_EQ(app_log_dir(file.apps[0], file), "/etc/lbd/-logs");

  FileConfig here = parse_config(text, "lbd.toml");
  EXPECT_EQ(here.apps[0].cwd, "../srv/web");
  EXPECT_EQ(here.apps[0].log_dir, "./-logs");  // never read as a flag

  FileConfig based = parse_config(text, "whatever.toml", std::string("/base"));
  EXPECT_EQ(based.apps[0].cwd, "/srv/web");
}

TEST(ConfigFile, AppsArrayMayBeWrittenInline) {
  FileConfig file = parse_config(
      R"(app = [ { name = "a", command = "a", listen = "1" }, { name = "b", command = "b", listen = "2" } ])",
      "lbd.toml");
  ASSERT_EQ(file.apps.size(), 2u);
  EXPECT_EQ(file.apps[1].name, "b");
  EXPECT_EQ(file.apps[1].listen, (Argv{"0.0.0.0:2"}));
}

TEST(ConfigFile, PortZeroAndOneAppOnBothFamiliesAreNotConflicts) {
  EXPECT_EQ(error_of(R"(
[[app]]
name = "a"
command = "a"
listen = ["127.0.0.1:0", "0.0.0.0:8080", "[::]:8080"]
admin = "127.0.0.1:0"
[[app]]
name = "b"
command = "b"
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
)"),
            "");
}

TEST(ConfigFile, AgentAndDrainGraceBecomeFlagsAndTheAgentPortIsClaimed) {
  FileConfig file = parse_config(R"(
[lbd]
drain_grace = 0
[[app]]
name = "web"
command = "w"
listen = "0.0.0.0:8080"
agent = "0.0.0.0:9181"
drain_grace = 15
[[app]]
name = "api"
command = "a"
listen = "0.0.0.0:3000"
)", "lbd.toml");
  Argv web = lbd_run_arguments(file.apps[0], file);
  auto agent = std::find(web.begin(), web.end(), "--agent");
  ASSERT_NE(agent, web.end());
  EXPECT_EQ(*(agent + 1), "0.0.0.0:9181");
  auto web_grace = std::find(web.begin(), web.end(), "--drain-grace");
  ASSERT_NE(web_grace, web.end());
  EXPECT_EQ(*(web_grace + 1), "15") << "the app's own value wins over [lbd]'s";
  Argv api = lbd_run_arguments(file.apps[1], file);
  auto grace = std::find(api.begin(), api.end(), "--drain-grace");
  ASSERT_NE(grace, api.end()) << "[lbd]'s drain_grace = 0 is passed on: it turns the grace off";
  EXPECT_EQ(*(grace + 1), "0");

  EXPECT_NE(error_of("[[app]]\nname = \"w\"\ncommand = \"w\"\nlisten = \"0.0.0.0:8080\"\nagent = \"0.0.0.0:8080\"\n")
                .find("key 'agent': port 8080 is already used by this app's listen"),
            std::string::npos);
  EXPECT_NE(error_of("[[app]]\nname = \"w\"\ncommand = \"w\"\nlisten = \"1\"\ndrain_grace = -1\n").find("drain_grace"),
            std::string::npos);
}

TEST(ConfigFile, TheShippedExampleLoads) {
  FileConfig file = load_config_file(LBD_EXAMPLE_CONFIG);
  ASSERT_EQ(file.apps.size(), 2u);
  std::string dir = std::string(LBD_EXAMPLE_CONFIG);
  dir = dir.substr(0, dir.rfind('/'));
  EXPECT_EQ(lbd_run_arguments(file.apps[0], file),
            (Argv{"run", "--name", "web",
                  "--instances", "max",
                  "--listen", "0.0.0.0:8080", "--listen", "[::]:8080",
                  "--cpus", "0-3",
                  "--policy", "least",
                  "--mode", "bpf",
                  "--env", "TZ=UTC", "--env", "PYTHONUNBUFFERED=1", "--env", "APP_ENV=production",
                  "--cwd", "/srv/web",
                  "--max-memory", "512M",
                  "--kill-timeout", "10",
                  "--ready-timeout", "30",
                  "--max-restarts", "5",
                  "--restart-window", "60",
                  "--log-dir", "/var/log/web",
                  "--log-max-size", "50M",
                  "--log-files", "10",
                  "--log-level", "info",
                  "--user", "www-data",
                  "--control", "/run/lbd/web.sock",
                  "--admin", "127.0.0.1:9180",
                  "--", "gunicorn", "--bind", "fd://3", "--workers", "1", "app:application"}));
  EXPECT_EQ(lbd_run_arguments(file.apps[1], file),
            (Argv{"run", "--name", "api",
                  "--instances", "2",
                  "--listen", "127.0.0.1:3000",
                  "--env", "TZ=UTC", "--env", "NODE_ENV=production", "--env", "PORT=3000",
                  "--cwd", dir + "/api",
                  "--max-memory", "1G",
                  "--log-dir", "/var/log/lbd",
                  "--log-max-size", "10M",
                  "--log-files", "3",
                  "--user", "www-data",
                  "--control", "/run/lbd/api.sock",
                  "--", "node", "server.js"}));
}

TEST(ConfigFile, LoadsFromDiskAndResolvesAgainstTheFile) {
  test::TempDir dir;
  std::ofstream(dir.path("lbd.toml")) << "[[app]]\nname = \"w\"\ncommand = \"w\"\nlisten = \"1\"\n";
  FileConfig file = load_config_file(dir.path("lbd.toml"));
  EXPECT_EQ(file.apps.at(0).cwd, dir.path());
}

TEST(ConfigFile, AFileThatCannotBeReadIsNamed) {
  test::TempDir dir;
  try {
    load_config_file(dir.path("missing.toml"));
    FAIL() << "loaded a missing file";
  } catch (const ConfigError& e) {
    std::string message = e.what();
    EXPECT_NE(message.find(dir.path("missing.toml")), std::string::npos) << message;
    EXPECT_NE(message.find("No such file"), std::string::npos) << message;
  }
  try {
    load_config_file(dir.path());
    FAIL() << "loaded a directory";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.path()), std::string::npos) << e.what();
  }
}

// --- bad files: a table of what is wrong, where, and what the message must say ------------------

struct BadFile {
  const char* description;
  const char* text;
  const char* where;              // the message starts with this: "lbd.toml:7:"
  std::vector<const char*> says;  // ...and contains each of these (the key, the reason)
};

// An app that is fine, to append to or to start from.
#define GOOD_APP "[[app]]\nname = \"web\"\ncommand = \"./server\"\nlisten = \"127.0.0.1:8080\"\n"

const BadFile kBadFiles[] = {
    // Syntax.
    {"syntax error: unterminated string", "[[app]]\nname = \"web\ncommand = \"x\"\n", "lbd.toml:2:",
     {"syntax error"}},
    {"syntax error: key twice", GOOD_APP "name = \"again\"\n", "lbd.toml:5:", {"syntax error", "name"}},
    {"syntax error: no value", "[[app]]\nname =\n", "lbd.toml:2:", {"syntax error"}},
    {"single [app] where [[app]] is meant", "[app]\nname = \"web\"\n", "lbd.toml:1:",
     {"key 'app'", "[[app]]"}},

    // Unknown keys, at every level.
    {"unknown top-level key", GOOD_APP "[server]\nport = 1\n", "lbd.toml:5:",
     {"key 'server' is not known (expected one of: lbd, app)"}},
    {"unknown key in [lbd]", "[lbd]\nlogdir = \"/x\"\n" GOOD_APP, "lbd.toml:2:",
     {"[lbd]", "key 'logdir' is not known", "did you mean 'log_dir'?"}},
    {"unknown key in an app", GOOD_APP "workrs = 4\n", "lbd.toml:5:",
     {"app 'web'", "key 'workrs' is not known", "did you mean 'workers'?", "kill_timeout"}},
    {"a name from elsewhere", GOOD_APP "shutdown_timeout = 5\n", "lbd.toml:5:",
     {"key 'shutdown_timeout' is not known", "did you mean 'kill_timeout'?"}},
    {"PM2's instances", GOOD_APP "instances = 4\n", "lbd.toml:5:", {"did you mean 'workers'?"}},
    {"unknown key in an app's log", GOOD_APP "log = { max_size = \"1M\", count = 3 }\n", "lbd.toml:5:",
     {"app 'web'", "key 'log.count' is not known", "log.files"}},
    {"unknown key in an app's [app.log]", GOOD_APP "[app.log]\nfiles = 2\nsize = 1\n", "lbd.toml:7:",
     {"app 'web'", "key 'log.size' is not known"}},
    {"log.dir is per app, not in [lbd]", "[lbd]\nlog = { dir = \"/x\" }\n" GOOD_APP, "lbd.toml:2:",
     {"[lbd]", "key 'log.dir' is not known"}},
    {"listen is per app, not in [lbd]", "[lbd]\nlisten = \"1\"\n" GOOD_APP, "lbd.toml:2:",
     {"[lbd]", "key 'listen' is not known"}},

    // Wrong types.
    {"workers as a string", GOOD_APP "workers = \"4\"\n", "lbd.toml:5:",
     {"app 'web'", "key 'workers'", "\"max\"", "\"4\""}},
    {"workers as a float", GOOD_APP "workers = 2.0\n", "lbd.toml:5:",
     {"key 'workers' must be a whole number", "not a float"}},
    {"listen as a number", "[[app]]\nname = \"web\"\ncommand = \"x\"\nlisten = 8080\n", "lbd.toml:4:",
     {"key 'listen' must be an address", "not an integer"}},
    {"listen list with a number", "[[app]]\nname = \"web\"\ncommand = \"x\"\nlisten = [\"1\", 2]\n",
     "lbd.toml:4:", {"key 'listen': each element must be a string, not an integer"}},
    {"command as a number", "[[app]]\nname = \"web\"\ncommand = 3\nlisten = \"1\"\n", "lbd.toml:3:",
     {"key 'command' must be a program", "not an integer"}},
    {"command list with a table", "[[app]]\nname = \"web\"\ncommand = [\"a\", {}]\nlisten = \"1\"\n",
     "lbd.toml:3:", {"key 'command': each element must be a string, not a table"}},
    {"name as a number", "[[app]]\nname = 1\ncommand = \"x\"\nlisten = \"1\"\n", "lbd.toml:2:",
     {"app #1", "key 'name' must be a string, not an integer"}},
    {"env as a string", GOOD_APP "env = \"A=1\"\n", "lbd.toml:5:", {"key 'env' must be a table"}},
    {"env value a boolean", GOOD_APP "env = { DEBUG = true }\n", "lbd.toml:5:",
     {"key 'env.DEBUG' must be a string, not a boolean"}},
    {"seconds as a string", GOOD_APP "kill_timeout = \"10s\"\n", "lbd.toml:5:",
     {"key 'kill_timeout' must be a number of seconds, not a string"}},
    {"size as a float", GOOD_APP "max_memory = 1.5\n", "lbd.toml:5:",
     {"key 'max_memory' must be a size in bytes", "not a float"}},
    {"[lbd] as a value", "lbd = 1\n" GOOD_APP, "lbd.toml:1:", {"key 'lbd' must be a table", "not an integer"}},
    {"app as a number", "app = 1\n", "lbd.toml:1:", {"key 'app' must be an array of tables", "not an integer"}},
    {"app list with a string", "app = [\"web\"]\n", "lbd.toml:1:",
     {"key 'app': each app must be a table", "not a string"}},
    {"log as a string", GOOD_APP "log = \"/var/log\"\n", "lbd.toml:5:", {"key 'log' must be a table"}},
    {"wait_ready as a string", GOOD_APP "wait_ready = \"yes\"\n", "lbd.toml:5:",
     {"key 'wait_ready' must be true or false, not a string"}},
    {"pin as a number", "[lbd]\npin = 0\n" GOOD_APP, "lbd.toml:2:", {"[lbd]", "key 'pin' must be true or false"}},
    {"policy as a number", GOOD_APP "policy = 1\n", "lbd.toml:5:", {"key 'policy' must be", "not an integer"}},

    // Missing or empty.
    {"empty file: no apps", "", "lbd.toml: ", {"key 'app' is missing", "[[app]]"}},
    {"only [lbd]: no apps", "[lbd]\nlog_dir = \"/x\"\n", "lbd.toml: ", {"key 'app' is missing"}},
    {"empty app list", "app = []\n", "lbd.toml:1:", {"key 'app' is empty"}},
    {"missing name", GOOD_APP "[[app]]\ncommand = \"x\"\nlisten = \"1\"\n", "lbd.toml:5:",
     {"app #2", "key 'name' is missing"}},
    {"missing command", "[[app]]\nname = \"web\"\nlisten = \"1\"\n", "lbd.toml:1:",
     {"app 'web'", "key 'command' is missing"}},
    {"missing listen", "[[app]]\nname = \"web\"\ncommand = \"x\"\n", "lbd.toml:1:",
     {"app 'web'", "key 'listen' is missing"}},
    {"empty command string", "[[app]]\nname = \"web\"\ncommand = \"\"\nlisten = \"1\"\n", "lbd.toml:3:",
     {"app 'web'", "key 'command': must not be empty"}},
    {"empty command list", "[[app]]\nname = \"web\"\ncommand = []\nlisten = \"1\"\n", "lbd.toml:3:",
     {"key 'command': must not be empty"}},
    {"empty program in the list", "[[app]]\nname = \"web\"\ncommand = [\"\", \"x\"]\nlisten = \"1\"\n",
     "lbd.toml:3:", {"key 'command': the program name must not be empty"}},
    {"command as a shell line", "[[app]]\nname = \"web\"\ncommand = \"python3 app.py\"\nlisten = \"1\"\n",
     "lbd.toml:3:", {"key 'command'", "not a shell line", "[\"python3\", \"app.py\"]"}},
    {"empty listen list", "[[app]]\nname = \"web\"\ncommand = \"x\"\nlisten = []\n", "lbd.toml:4:",
     {"key 'listen': must list at least one address"}},
    {"empty name", "[[app]]\nname = \"\"\ncommand = \"x\"\nlisten = \"1\"\n", "lbd.toml:2:",
     {"key 'name': must not be empty"}},
    {"empty cwd", GOOD_APP "cwd = \"\"\n", "lbd.toml:5:", {"key 'cwd': must not be empty"}},

    // Duplicates across apps.
    {"duplicate app name", GOOD_APP "\n[[app]]\nname = \"web\"\ncommand = \"y\"\nlisten = \"9\"\n",
     "lbd.toml:7:", {"app 'web'", "key 'name'", "line 2", "unique"}},
    {"two apps on one port", GOOD_APP "[[app]]\nname = \"api\"\ncommand = \"y\"\nlisten = [\"[::1]:9\", \"0.0.0.0:8080\"]\n",
     "lbd.toml:8:", {"app 'api'", "key 'listen'", "port 8080", "app 'web'", "line 4"}},
    {"an admin port that is another app's listen port",
     GOOD_APP "[[app]]\nname = \"api\"\ncommand = \"y\"\nlisten = \"9\"\nadmin = \"127.0.0.1:8080\"\n",
     "lbd.toml:9:", {"app 'api'", "key 'admin'", "port 8080", "app 'web'"}},
    {"an app's admin port equal to its listen port", GOOD_APP "admin = \"127.0.0.1:8080\"\n",
     "lbd.toml:5:", {"app 'web'", "key 'admin'", "port 8080", "this app's listen"}},
    {"one address listed twice", "[[app]]\nname = \"web\"\ncommand = \"x\"\nlisten = [\"8080\", \"0.0.0.0:8080\"]\n",
     "lbd.toml:4:", {"key 'listen'", "0.0.0.0:8080 is listed twice"}},

    // Bad values, checked with the flags' own rules.
    {"bad address", "[[app]]\nname = \"web\"\ncommand = \"x\"\nlisten = \"1.2.3:80\"\n", "lbd.toml:4:",
     {"app 'web'", "key 'listen'", "1.2.3:80"}},
    {"bad port", "[[app]]\nname = \"web\"\ncommand = \"x\"\nlisten = [\"1\",\n  \"[::]:99999\"]\n",
     "lbd.toml:5:", {"key 'listen'", "port must be 0-65535"}},
    {"IPv6 without brackets", "[[app]]\nname = \"web\"\ncommand = \"x\"\nlisten = \"::1:80\"\n",
     "lbd.toml:4:", {"key 'listen'", "brackets"}},
    {"bad admin address", GOOD_APP "admin = \"localhost:9180\"\n", "lbd.toml:5:",
     {"key 'admin': bad address 'localhost:9180'"}},
    {"too many listen addresses",
     "[[app]]\nname = \"web\"\ncommand = \"x\"\nlisten = [\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]\n",
     "lbd.toml:4:", {"key 'listen'", "at most 8"}},
    {"bad cpus", GOOD_APP "cpus = \"0-x\"\n", "lbd.toml:5:", {"key 'cpus'", "'x' is not a CPU number"}},
    {"backwards cpus", GOOD_APP "cpus = \"3-1\"\n", "lbd.toml:5:", {"key 'cpus'", "backwards"}},
    {"bad cpus in [lbd]", "[lbd]\ncpus = \"\"\n" GOOD_APP, "lbd.toml:2:", {"[lbd]", "key 'cpus'", "empty"}},
    {"bad policy", GOOD_APP "policy = \"fastest\"\n", "lbd.toml:5:",
     {"key 'policy'", "fastest", "rr, least, hash or sticky"}},
    {"bad mode", GOOD_APP "mode = \"handoff\"\n", "lbd.toml:5:", {"key 'mode'", "bpf or reuseport"}},
    {"workers other than max", GOOD_APP "workers = \"auto\"\n", "lbd.toml:5:",
     {"key 'workers'", "\"max\"", "\"max-N\"", "\"auto\""}},
    {"workers max minus junk", GOOD_APP "workers = \"max-x\"\n", "lbd.toml:5:", {"key 'workers'", "\"max-x\""}},
    {"zero workers", GOOD_APP "workers = 0\n", "lbd.toml:5:", {"key 'workers'", "from 1 to 64", "not 0"}},
    {"negative workers", GOOD_APP "workers = -2\n", "lbd.toml:5:", {"key 'workers'", "not -2"}},
    {"too many workers", GOOD_APP "workers = 65\n", "lbd.toml:5:", {"key 'workers'", "not 65"}},
    {"bad size suffix", GOOD_APP "max_memory = \"512X\"\n", "lbd.toml:5:",
     {"key 'max_memory'", "'512X' is not a size", "512M"}},
    {"fractional size", GOOD_APP "max_memory = \"1.5G\"\n", "lbd.toml:5:", {"key 'max_memory'", "not a size"}},
    {"zero size", GOOD_APP "max_memory = \"0M\"\n", "lbd.toml:5:", {"key 'max_memory'", "more than 0"}},
    {"negative size", GOOD_APP "log = { max_size = -1 }\n", "lbd.toml:5:", {"key 'log.max_size'", "more than 0"}},
    {"huge size", GOOD_APP "max_memory = \"99999999999T\"\n", "lbd.toml:5:", {"key 'max_memory'", "too large"}},
    {"zero kill timeout", GOOD_APP "kill_timeout = 0\n", "lbd.toml:5:",
     {"key 'kill_timeout'", "more than 0", "not 0"}},
    {"zero ready delay", GOOD_APP "ready_delay = 0\n", "lbd.toml:5:", {"key 'ready_delay'", "more than 0"}},
    {"negative ready timeout", GOOD_APP "ready_timeout = -1\n", "lbd.toml:5:", {"key 'ready_timeout'", "not -1"}},
    {"restart window too long", GOOD_APP "restart_window = 1e9\n", "lbd.toml:5:",
     {"key 'restart_window'", "86400"}},
    {"nan seconds", GOOD_APP "kill_timeout = nan\n", "lbd.toml:5:", {"key 'kill_timeout'", "not nan"}},
    {"log files smaller than lbd run allows", GOOD_APP "log = { max_size = \"1K\" }\n", "lbd.toml:5:",
     {"key 'log.max_size'", "at least 4K", "not 1K"}},
    {"bad log level", "[lbd]\nlog_level = \"loud\"\n" GOOD_APP, "lbd.toml:2:",
     {"[lbd]", "key 'log_level'", "'loud'", "debug"}},
    {"negative max_restarts", GOOD_APP "max_restarts = -1\n", "lbd.toml:5:", {"key 'max_restarts'", "not -1"}},
    {"zero log files", GOOD_APP "[app.log]\nfiles = 0\n", "lbd.toml:6:", {"key 'log.files'", "from 1"}},
    {"bad app name", "[[app]]\nname = \"my app\"\ncommand = \"x\"\nlisten = \"1\"\n", "lbd.toml:2:",
     {"key 'name'", "'my app' is not a valid app name"}},
    {"app name that reads as a flag", "[[app]]\nname = \"-web\"\ncommand = \"x\"\nlisten = \"1\"\n",
     "lbd.toml:2:", {"key 'name'", "not a valid app name"}},
    {"app name too long for a control socket",
     "[lbd]\ncontrol_dir = \"/tmp/a/very/long/directory/for/control/sockets/that/goes/on/and/on\"\n"
     "[[app]]\nname = \"an-app-with-a-long-name-too-1234567890\"\ncommand = \"x\"\nlisten = \"1\"\n",
     "lbd.toml:4:", {"key 'name'", "control socket", "control_dir"}},
    {"bad env name", GOOD_APP "env = { \"MY-VAR\" = \"1\" }\n", "lbd.toml:5:", {"key 'env.MY-VAR'", "letters"}},
    {"NUL in an argument", "[[app]]\nname = \"web\"\ncommand = [\"x\", \"a\\u0000b\"]\nlisten = \"1\"\n",
     "lbd.toml:3:", {"key 'command'", "NUL"}},
};

TEST(ConfigFile, EveryBadFileGetsOneLineNamingTheFileLineAndKey) {
  for (const BadFile& bad : kBadFiles) {
    SCOPED_TRACE(bad.description);
    std::string message = error_of(bad.text);
    ASSERT_FALSE(message.empty()) << "loaded without an error";
    EXPECT_EQ(message.rfind(bad.where, 0), 0u) << message;
    for (const char* word : bad.says) EXPECT_NE(message.find(word), std::string::npos) << word << " in: " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(ConfigFile, SyntaxErrorsGiveLineAndColumn) {
  std::string message = error_of("[[app]]\nname = \"web\"\nworkers = 4x\n", "/etc/lbd/lbd.toml");
  EXPECT_EQ(message.rfind("/etc/lbd/lbd.toml:3:", 0), 0u) << message;
  EXPECT_NE(message.find("syntax error"), std::string::npos) << message;
  // line:column:
  EXPECT_TRUE(message.size() > 21 && std::isdigit(static_cast<unsigned char>(message[20]))) << message;
}

TEST(ConfigFile, EchoedValuesCannotBreakTheLine) {
  std::string message = error_of(GOOD_APP "policy = \"a\\nb\"\n");
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_NE(message.find("a\\nb"), std::string::npos) << message;
}

// --- sizes ----------------------------------------------------------------------------------------

TEST(ConfigSize, ParsesBytesWithBinarySuffixes) {
  struct Case {
    const char* text;
    uint64_t bytes;
  };
  const Case cases[] = {
      {"1", 1},           {"4096", 4096},        {"10K", 10240},       {"10k", 10240},
      {"512M", 512ull << 20}, {"512MB", 512ull << 20}, {"1G", 1ull << 30}, {"1GiB", 1ull << 30},
      {"2T", 2ull << 40}, {"100B", 100},
  };
  for (const Case& c : cases) {
    auto bytes = parse_size(c.text);
    ASSERT_TRUE(bytes) << c.text << ": " << bytes.error().message();
    EXPECT_EQ(*bytes, c.bytes) << c.text;
  }
}

TEST(ConfigSize, RejectsAnythingElseSayingWhatIsWrong) {
  for (const char* text : {"", "M", "0", "0K", "-1", "1.5G", "12 M", "1X", "1KK", "1iB", "1Mb",
                           "99999999999999999999", "20000000T"}) {
    auto bytes = parse_size(text);
    ASSERT_FALSE(bytes) << "accepted '" << text << "'";
    const std::string message = bytes.error().message();
    EXPECT_TRUE(message.find("'" + std::string(text) + "'") != std::string::npos ||
                message == "must be more than 0 bytes")
        << message;
  }
}

TEST(ConfigSize, FormatsTheShortestExactSpelling) {
  EXPECT_EQ(format_size(1), "1");
  EXPECT_EQ(format_size(1000), "1000");
  EXPECT_EQ(format_size(1024), "1K");
  EXPECT_EQ(format_size(1536), "1536");
  EXPECT_EQ(format_size(512ull << 20), "512M");
  EXPECT_EQ(format_size(3ull << 30), "3G");
  EXPECT_EQ(format_size(1ull << 40), "1T");
  for (uint64_t bytes : {1ull, 1000ull, 1536ull, 10ull << 20, (1ull << 40) + 1024}) {
    EXPECT_EQ(*parse_size(format_size(bytes)), bytes);
  }
}

}  // namespace
}  // namespace lbd::config
