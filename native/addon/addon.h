// addon.h — shared helpers of the Node-API addon: status → JS Error with code.
#pragma once
#include <napi.h>

#include "shoal.h"

#include <string>

namespace shoal_addon {

// A JS Error whose .code is the stable status name (e.g. "SHOAL_ERR_ST_TRUNCATED").
inline Napi::Error make_error(Napi::Env env, shoal_status st, const std::string & msg) {
    Napi::Error e = Napi::Error::New(env, msg.empty() ? shoal_status_name(st) : msg);
    e.Set("code", Napi::String::New(env, shoal_status_name(st)));
    return e;
}

inline void throw_type(Napi::Env env, const std::string & msg) {
    Napi::TypeError e = Napi::TypeError::New(env, msg);
    e.Set("code", Napi::String::New(env, shoal_status_name(SHOAL_ERR_INVALID_ARG)));
    throw e;
}

constexpr size_t kErrLen = 1024;

} // namespace shoal_addon
