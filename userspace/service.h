// The entry point for a service that embeds lbd: link lbd_core, write a Handler, and call
//
//   int main(int argc, char** argv) { return lbd::run(argc, argv, my_handler); }
//
// The same binary is then both lbd's supervisor (it takes every lbd flag: --workers, --listen,
// --policy, ...) and each of its workers: the supervisor executes the binary again for every
// worker, and lbd::run() tells the two apart by the worker spec in the environment.
#pragma once

#include <functional>

#include "worker/handler.h"
#include "worker/worker_spec.h"

namespace lbd {

// Returns the process exit code.
int run(int argc, char** argv, Handler handler);
// A service that also takes operators' messages (`lbctl send`, handler.h).
int run(int argc, char** argv, Service service);

// The same, with the handler (or the whole service) made in each worker from what it was started
// with (for example lbd's bundled app, whose demo routes are on only with --demo-routes).
using HandlerFactory = std::function<Handler(const WorkerSpec&)>;
int run(int argc, char** argv, const HandlerFactory& make_handler);
using ServiceFactory = std::function<Service(const WorkerSpec&)>;
int run(int argc, char** argv, const ServiceFactory& make_service);

}  // namespace lbd
