// Streams: ordered queues of work on one device. Every op issues its kernels on the calling
// thread's current stream of the tensors' device (the device's default stream unless a StreamGuard
// says otherwise); kernels on one stream run in issue order, kernels on two streams in any order.
// On the CPU every kernel runs to completion before the op returns, so there is one stream and
// nothing to wait for.
#pragma once

#include "lsgrad/core/dtype.h"

namespace lsg {

// A stream of `device`. handle is the backend's own (a cudaStream_t on CUDA); null means the
// device's default stream, the one every op uses unless told otherwise.
struct Stream {
    Device device;
    void* handle = nullptr;
    friend bool operator==(const Stream&, const Stream&) = default;
};

// A new stream of `device`, owned by lsgrad until the program exits. On the CPU, the default stream.
// Throws "built without CUDA" for a device whose backend this build does not have.
Stream new_stream(Device device);
// The calling thread's current stream of `device`.
Stream current_stream(Device device);

// Makes `stream` the calling thread's current stream of its device until the guard goes out of
// scope, then restores the previous one. Work on two streams is unordered: a tensor made on one and
// used on another needs synchronize() of the first in between, and must stay alive until the
// second's work on it is done (the caching allocator hands a freed block to the next allocation
// whatever its stream).
class StreamGuard {
public:
    explicit StreamGuard(Stream stream);
    ~StreamGuard();
    StreamGuard(const StreamGuard&) = delete;
    StreamGuard& operator=(const StreamGuard&) = delete;

private:
    Stream previous_;   // the thread's guarded stream of this device type before the guard
    bool was_guarded_;  // whether there was one
    DeviceType type_;
};

// Waits until every kernel issued on the calling thread's current stream of `device` has finished,
// then raises any error those kernels recorded on the device (an out-of-range class target of a
// CUDA loss, see ops/loss.h) as the lsg::Error the CPU raises at once. item(), a copy to the host
// and this call are the synchronising calls.
void synchronize(Device device);

}  // namespace lsg
