// hello_service: a C++ service that links lbd and runs its own handler in lbd's workers.
//
// Shows: the whole embedding API (lbd::run, lbd::Service, lbd::Exchange), a synchronous answer, a
// JSON answer with a custom header, a deferred answer that does not block the worker's loop, and
// operators' messages: `lbctl send --all howdy` makes every worker greet with "howdy".
// Needs: Linux >= 6.0; root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN) for the default --mode bpf.
// Run:   ./hello_service --listen 127.0.0.1:8081 --workers 2
//        curl -i localhost:8081/hello?name=ops
#include <string>
#include <string_view>

#include "service.h"

namespace {

// Each worker is a process with one loop: its handler and on_message never run at once.
std::string greeting = "hello";

void handle(lbd::Exchange& ex) {
  const lbd::Request& request = ex.request();
  if (request.path() == "/hello") {
    std::string name(request.query_param("name").value_or("world"));
    return ex.respond(200, greeting + ", " + name + "\n");
  }
  if (request.path() == "/whoami") {
    ex.add_header("Cache-Control", "no-store");
    return ex.respond(200, "{\"worker\":" + std::to_string(ex.worker_slot()) + "}\n",
                      "application/json");
  }
  if (request.path() == "/later") {
    // Answer in 100 ms; the worker serves other connections meanwhile.
    return ex.respond_after(std::chrono::milliseconds(100),
                            [](lbd::Exchange& later) { later.respond(200, "later\n"); });
  }
  ex.respond(404, "not found\n");
}

// `lbctl send SLOT|--all TEXT`: one line, on the worker's loop.
void on_message(std::string_view text) { greeting = text; }

}  // namespace

int main(int argc, char** argv) { return lbd::run(argc, argv, lbd::Service{.handler = handle, .on_message = on_message}); }
