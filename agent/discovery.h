/*
 * agent/discovery.h - finding devices on the LAN with mDNS/DNS-SD through
 * avahi-daemon: publish our _shoal._tcp service, browse for the others'.
 *
 * Invariants:
 * - An announcement is a hint, never a credential: it names a device ID and
 *   an address, and the handshake proves (or not) that the device at that
 *   address holds that ID's key. Our own ID is never reported.
 * - Discovery never stops the agent: without a D-Bus system bus or
 *   avahi-daemon it logs once, keeps retrying from a timer, and publishes
 *   and browses again when the daemon comes (back). Static addresses work
 *   throughout.
 * - Everything runs in the loop thread. avahi-client's D-Bus calls block
 *   (up to 25 s if avahi-daemon hangs); there are few of them: at start,
 *   per reconnect and per service found.
 * - The service is "shoal-" + the first 7 characters of the device ID + "-"
 *   + the device name, cut to one DNS label (63 bytes); a name taken on the
 *   LAN becomes Avahi's alternative ("... #2"). TXT: "id=<device ID>".
 */
#ifndef SHOAL_AGENT_DISCOVERY_H
#define SHOAL_AGENT_DISCOVERY_H

#include <uv.h>

#define DISCOVERY_SERVICE_TYPE "_shoal._tcp"

struct discovery;

/*
 * Starts publishing _shoal._tcp on port with TXT "id=<device_id>" and
 * browsing for _shoal._tcp on every interface. device_name may be NULL or ""
 * (the host name is used); both strings are copied.
 *
 * on_found(arg, id, addr) runs in the loop thread for every resolved service
 * whose TXT id is not device_id, again whenever that service's address
 * changes, and again after a reconnection to avahi-daemon. addr is
 * "a.b.c.d:port", "[fe80::x%ifname]:port" (IPv6 link-local) or
 * "[addr]:port". Both strings are valid during the call only. on_found may
 * call discovery_stop().
 *
 * Never fails because avahi-daemon or D-Bus is missing. Returns 0 and sets
 * *out, or -ENOMEM (-EINVAL for a port outside 1..65535 or an ID of 64
 * characters or more). Stop it with discovery_stop().
 */
int discovery_start(uv_loop_t *loop, const char *device_id, const char *device_name, int port,
		    void (*on_found)(void *arg, const char *device_id, const char *addr), void *arg,
		    struct discovery **out);

/*
 * Withdraws the service, closes every handle and frees d once libuv has
 * closed them: the caller keeps running the loop. on_found is not called
 * again. Safe on NULL.
 */
void discovery_stop(struct discovery *d);

/* 1 when connected to avahi-daemon now, else 0 (also for NULL). */
int discovery_running(const struct discovery *d);

#endif
