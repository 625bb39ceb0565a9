// lbd: one worker per CPU behind one port, connections steered in the kernel.
// Run `lbd --help`. This binary serves the bundled app (worker/bundled_app.h); a service of your
// own calls lbd::run() with its handler instead (examples/hello_service.cpp).
#include "service.h"
#include "worker/bundled_app.h"

int main(int argc, char** argv) {
  return lbd::run(argc, argv,
                  lbd::ServiceFactory([](const lbd::WorkerSpec& spec) { return lbd::bundled_service(spec.demo_routes); }));
}
