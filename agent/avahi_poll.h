/*
 * agent/avahi_poll.h - Avahi's main-loop abstraction (AvahiPoll) on the
 * agent's libuv loop, so avahi-client runs in the loop thread without a
 * thread or a second poller of its own.
 *
 * Invariants:
 * - One uv_poll_t per file descriptor. libuv allows one poll handle per fd,
 *   but libdbus asks for a read watch and a write watch on the same socket,
 *   so every AvahiWatch of an fd shares that fd's handle, polled for the
 *   union of what the live watches want.
 * - A handle is stopped and closed as soon as the last watch of its fd is
 *   freed. libdbus frees its watches before it closes the socket, so the fd
 *   is never polled (nor removed from epoll) after it was closed and its
 *   number possibly reused.
 * - Watches and timeouts may be freed from inside their own callbacks (Avahi
 *   and libdbus do): a freed watch is marked dead and its memory swept after
 *   the dispatch; a timeout's memory goes in its handle's close callback.
 * - AvahiTimeout takes an absolute gettimeofday() time, or NULL for
 *   "disabled". It is turned into a relative libuv timer against a fresh
 *   loop clock (uv_update_time), because the loop's clock is stale after any
 *   blocking D-Bus call. A timeout fires once and stays disabled until it is
 *   updated.
 * - Loop thread only. Names are avpoll_ to stay clear of Avahi's own.
 */
#ifndef SHOAL_AGENT_AVAHI_POLL_H
#define SHOAL_AGENT_AVAHI_POLL_H

#include <avahi-common/watch.h>
#include <uv.h>

struct avpoll;

/*
 * Makes an adapter for loop. Returns NULL when out of memory. The caller
 * owns it and ends it with avpoll_free().
 */
struct avpoll *avpoll_new(uv_loop_t *loop);

/*
 * The AvahiPoll to hand to avahi_client_new(). Valid until avpoll_free(p).
 */
const AvahiPoll *avpoll_api(struct avpoll *p);

/*
 * Closes every handle still open (normally none: avahi_client_free() frees
 * all the watches and timeouts the client made, so call that first) and
 * frees p. Watches and timeouts still alive become invalid. Their memory is
 * released in the close callbacks, so the caller keeps running the loop.
 * Safe on NULL. May be called from inside a watch or timeout callback.
 */
void avpoll_free(struct avpoll *p);

#endif
