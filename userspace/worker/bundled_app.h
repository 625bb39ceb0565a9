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
#pragma once

#include "worker/handler.h"

namespace lbd {

Handler bundled_app(bool demo_routes);

}  // namespace lbd
