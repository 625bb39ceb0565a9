// The HTTP app lbd serves when no service of your own is linked in: enough to see it work and to
// benchmark and test the data path.
//
//   GET  /              200 "hello, world\n" (13 bytes)
//   POST /echo          answers with the request body
//   anything else       404
// With demo routes (--demo-routes; scripts/start.sh turns them on), also these two, which let any
// client burn a worker's CPU or hold its connections, so a plain lbd serves neither:
//   GET  /work?us=N     burns N microseconds of CPU, then answers (skewed-load tests)
//   GET  /sleep?ms=N    answers after N ms without blocking the worker (an io_uring timeout)
// Every response carries X-Worker: <slot>.
//
// As a service (bundled_service), it also takes operators' messages (`lbctl send`; the worker
// logs each as `message: TEXT`), and with demo routes serves
//   GET  /last-message  the last message this worker received (404 before the first)
// so that a test, or an operator trying it, can see which workers got what.
#pragma once

#include "worker/handler.h"

namespace lbd {

// The requests alone (fuzzing, benchmarks).
Handler bundled_app(bool demo_routes);
// What lbd's workers run: the requests and the messages.
Service bundled_service(bool demo_routes);

}  // namespace lbd
