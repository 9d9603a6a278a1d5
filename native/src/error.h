// error.h — the one exception type used inside the engine. It never crosses
// shoal.h: the C API catches it and returns its status and message.
#pragma once
#include "shoal.h"

#include <stdexcept>
#include <string>

namespace shoal {

struct Error : std::runtime_error {
    shoal_status status;
    Error(shoal_status s, const std::string & msg) : std::runtime_error(msg), status(s) {}
};

[[noreturn]] inline void fail(shoal_status s, const std::string & msg) { throw Error(s, msg); }

#define SHOAL_CHECK(cond, status, msg)                 \
    do {                                               \
        if (!(cond)) ::shoal::fail((status), (msg));   \
    } while (0)

} // namespace shoal
