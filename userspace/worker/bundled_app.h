// The HTTP app lbd serves when no service of your own is linked in: enough to see it work and to
// benchmark and test the data path.
//
//   GET  /              200 "hello, world\n" (13 bytes)
//   GET  /work?us=N     burns N microseconds of CPU, then answers (skewed-load tests)
//   GET  /sleep?ms=N    answers after N ms without blocking the worker (an io_uring timeout)
//   POST /echo          answers with the request body
//   anything else       404
// Every response carries X-Worker: <slot>.
#pragma once

#include "worker/handler.h"

namespace lbd {

void bundled_app(Exchange& exchange);

}  // namespace lbd
