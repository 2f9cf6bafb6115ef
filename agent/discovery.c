/*
 * agent/discovery.c - mDNS/DNS-SD discovery with avahi-client on the loop.
 *
 * One AvahiClient at a time, made with AVAHI_CLIENT_NO_FAIL so that a missing
 * avahi-daemon leaves it waiting (CONNECTING) instead of failing. A client
 * that failed (the daemon or the bus went away) stays dead: the retry timer
 * frees it and makes a new one, never the client's own callback. The state
 * callback also runs from inside avahi_client_new(), so it works on its
 * client argument, not on d->client. The retry timer doubles as the
 * CONNECTING watchdog (a daemon that hung while we connected never sends the
 * signal that ends CONNECTING).
 *
 * Each service the browser reports gets an entry with a resolver that stays
 * open, so an address change is reported too; the entry goes on REMOVE.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/domain.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>

#include "agent/avahi_poll.h"
#include "agent/discovery.h"
#include "agent/log.h"

#define RETRY_FIRST_MS 5000u /* no bus, or the daemon did not show up: retry, doubling */
#define RETRY_MAX_MS 60000u
#define RETRY_LOST_MS 1000u /* the daemon went away: a new client then waits for it */
#define MAX_SERVICES 256    /* entries kept from browsing; more are ignored */
#define MAX_RENAMES 12	    /* local name clashes tried before giving up */
#define ID_MAX 64	    /* longest TXT id accepted (device IDs have 63 characters) */
#define ADDR_MAX (INET6_ADDRSTRLEN + IF_NAMESIZE + 10)

/* A service seen by the browser, on one interface and protocol. */
struct service {
	struct service *next;
	struct discovery *d;
	AvahiIfIndex iface;
	AvahiProtocol proto;
	char *name, *domain;
	AvahiServiceResolver *resolver; /* NULL once it failed */
	char *reported;			/* "ID ADDR" last passed to on_found, or NULL */
};

struct discovery {
	uv_loop_t *loop;
	struct avpoll *poll;
	AvahiClient *client;
	AvahiEntryGroup *group;
	AvahiServiceBrowser *browser;
	struct service *services;
	size_t nservices;
	uv_timer_t retry; /* makes a new client; also the deferred stop */
	char *id;
	char *name; /* Avahi memory: avahi_alternative_service_name() makes the next one */
	uint16_t port;
	void (*on_found)(void *arg, const char *device_id, const char *addr);
	void *arg;
	unsigned backoff_ms;
	int connected;	 /* the client is connected to the daemon */
	int was_running; /* this client reached S_RUNNING */
	int published;	 /* the group holds our service */
	int down_logged; /* the outage was logged */
	int in_callback; /* inside on_found */
	int stopping;
};

static void client_open(struct discovery *d);
static void publish(struct discovery *d, AvahiClient *c);

/* ---- the service name ---- */

/* Length of the well-formed UTF-8 sequence at s (n bytes left), or 0. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;
		if (s[0] == 0xed)
			hi = 0x9f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		if (s[0] == 0xf0)
			lo = 0x90;
		if (s[0] == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/*
 * "shoal-" + the first 7 characters of id + "-" + the device name (the host
 * name up to its first dot when there is none), as one DNS label: at most
 * AVAHI_LABEL_MAX - 1 bytes of valid UTF-8, control characters and broken
 * sequences turned into '-'. Returns Avahi memory, or NULL.
 */
static char *
service_name(const char *id, const char *device_name)
{
	char buf[AVAHI_LABEL_MAX], host[256];
	const unsigned char *s;
	size_t len, n, k;

	if (!device_name || !device_name[0]) {
		if (gethostname(host, sizeof(host)) != 0)
			snprintf(host, sizeof(host), "device");
		host[sizeof(host) - 1] = '\0';
		host[strcspn(host, ".")] = '\0';
		device_name = host[0] ? host : "device";
	}
	len = (size_t)snprintf(buf, sizeof(buf), "shoal-%.7s-", id);
	s = (const unsigned char *)device_name;
	n = strlen(device_name);
	while (n > 0 && len < sizeof(buf) - 1) {
		k = utf8_len(s, n);
		if (k == 0 || (k == 1 && (s[0] < 0x20 || s[0] == 0x7f))) {
			buf[len++] = '-';
			k = 1;
		} else if (len + k < sizeof(buf)) {
			memcpy(buf + len, s, k);
			len += k;
		} else {
			break;
		}
		s += k;
		n -= k;
	}
	buf[len] = '\0';
	return avahi_strdup(buf);
}

static void
service_rename(struct discovery *d)
{
	char *next = avahi_alternative_service_name(d->name);

	if (next) {
		avahi_free(d->name);
		d->name = next;
	}
}

/* ---- browsed services ---- */

static void
service_free(struct service *s, int free_resolver)
{
	if (free_resolver && s->resolver)
		avahi_service_resolver_free(s->resolver);
	free(s->name);
	free(s->domain);
	free(s->reported);
	free(s);
}

static struct service **
service_find(struct discovery *d, AvahiIfIndex iface, AvahiProtocol proto, const char *name,
	     const char *domain)
{
	struct service **ps;

	for (ps = &d->services; *ps; ps = &(*ps)->next) {
		struct service *s = *ps;
		if (s->iface == iface && s->proto == proto && strcmp(s->name, name) == 0 &&
		    strcmp(s->domain, domain) == 0)
			break;
	}
	return ps;
}

/* Drops every entry; their resolvers went with the client already. */
static void
services_forget(struct discovery *d)
{
	while (d->services) {
		struct service *s = d->services;
		d->services = s->next;
		service_free(s, 0);
	}
	d->nservices = 0;
}

/* Copies the TXT "id" value into out when it looks like a device ID. */
static int
txt_id(AvahiStringList *txt, char *out, size_t len)
{
	AvahiStringList *l = avahi_string_list_find(txt, "id");
	const char *text;
	size_t size;

	if (!l)
		return -ENOENT;
	text = (const char *)avahi_string_list_get_text(l);
	size = avahi_string_list_get_size(l);
	if (size <= 3 || text[2] != '=' || size - 3 >= len)
		return -EINVAL;
	for (size_t i = 3; i < size; i++) {
		char ch = text[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '-'))
			return -EINVAL;
	}
	memcpy(out, text + 3, size - 3);
	out[size - 3] = '\0';
	return 0;
}

/* "a.b.c.d:port", "[fe80::x%ifname]:port" or "[addr]:port". */
static int
addr_format(const AvahiAddress *a, AvahiIfIndex iface, uint16_t port, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN], ifname[IF_NAMESIZE];
	const uint8_t *b;
	int n;

	switch (a->proto) {
	case AVAHI_PROTO_INET:
		if (!inet_ntop(AF_INET, &a->data.ipv4.address, host, sizeof(host)))
			return -EINVAL;
		n = snprintf(out, len, "%s:%u", host, (unsigned)port);
		break;
	case AVAHI_PROTO_INET6:
		b = a->data.ipv6.address;
		if (!inet_ntop(AF_INET6, b, host, sizeof(host)))
			return -EINVAL;
		if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) {
			/* Link-local: useless without the interface it was seen on. */
			if (iface < 0 || !if_indextoname((unsigned)iface, ifname))
				return -ENODEV;
			n = snprintf(out, len, "[%s%%%s]:%u", host, ifname, (unsigned)port);
		} else {
			n = snprintf(out, len, "[%s]:%u", host, (unsigned)port);
		}
		break;
	default:
		return -EAFNOSUPPORT;
	}
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static void
on_resolve(AvahiServiceResolver *r, AvahiIfIndex iface, AvahiProtocol proto,
	   AvahiResolverEvent event, const char *name, const char *type, const char *domain,
	   const char *host, const AvahiAddress *a, uint16_t port, AvahiStringList *txt,
	   AvahiLookupResultFlags flags, void *arg)
{
	struct service *s = arg;
	struct discovery *d = s->d;
	char id[ID_MAX], addr[ADDR_MAX], key[ID_MAX + ADDR_MAX];
	int rc;

	if (event == AVAHI_RESOLVER_FAILURE) {
		log_debug("mDNS: cannot resolve \"%s\": %s", name,
			  avahi_strerror(avahi_client_errno(avahi_service_resolver_get_client(r))));
		/* The entry stays, so the browser's repeats do not start another. */
		avahi_service_resolver_free(r);
		s->resolver = NULL;
		return;
	}
	if (d->stopping || !d->on_found)
		return;
	if (txt_id(txt, id, sizeof(id)) != 0) {
		log_debug("mDNS: \"%s\" on %s carries no usable id", name, host);
		return;
	}
	if (strcmp(id, d->id) == 0)
		return;
	rc = addr_format(a, iface, port, addr, sizeof(addr));
	if (rc != 0) {
		log_debug("mDNS: \"%s\" on %s: unusable address: %s", name, host, strerror(-rc));
		return;
	}
	snprintf(key, sizeof(key), "%s %s", id, addr);
	if (s->reported && strcmp(s->reported, key) == 0)
		return;
	free(s->reported);
	s->reported = strdup(key);
	log_debug("mDNS: device %s at %s (\"%s\" on %s)", id, addr, name, host);
	d->in_callback++;
	d->on_found(d->arg, id, addr);
	d->in_callback--;
}

static void
service_add(struct discovery *d, AvahiClient *c, AvahiIfIndex iface, AvahiProtocol proto,
	    const char *name, const char *type, const char *domain)
{
	struct service *s;

	if (*service_find(d, iface, proto, name, domain))
		return;
	if (d->nservices >= MAX_SERVICES) {
		log_debug("mDNS: ignoring \"%s\": %u services known already", name, MAX_SERVICES);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return;
	s->d = d;
	s->iface = iface;
	s->proto = proto;
	s->name = strdup(name);
	s->domain = strdup(domain);
	if (!s->name || !s->domain) {
		service_free(s, 0);
		return;
	}
	s->resolver = avahi_service_resolver_new(c, iface, proto, name, type, domain,
						 AVAHI_PROTO_UNSPEC, 0, on_resolve, s);
	if (!s->resolver) {
		log_debug("mDNS: cannot resolve \"%s\": %s", name,
			  avahi_strerror(avahi_client_errno(c)));
		service_free(s, 0);
		return;
	}
	s->next = d->services;
	d->services = s;
	d->nservices++;
}

static void
service_remove(struct discovery *d, AvahiIfIndex iface, AvahiProtocol proto, const char *name,
	       const char *domain)
{
	struct service **ps = service_find(d, iface, proto, name, domain);
	struct service *s = *ps;

	if (!s)
		return;
	*ps = s->next;
	d->nservices--;
	service_free(s, 1);
}

static void
on_browse(AvahiServiceBrowser *b, AvahiIfIndex iface, AvahiProtocol proto, AvahiBrowserEvent event,
	  const char *name, const char *type, const char *domain, AvahiLookupResultFlags flags,
	  void *arg)
{
	struct discovery *d = arg;
	AvahiClient *c = avahi_service_browser_get_client(b);

	if (d->stopping)
		return;
	switch (event) {
	case AVAHI_BROWSER_NEW:
		/*
		 * Our own service too (AVAHI_LOOKUP_RESULT_OUR_OWN): after a
		 * rename the name we gave up is another device's, and the
		 * browser does not report it as new again.
		 */
		service_add(d, c, iface, proto, name, type, domain);
		break;
	case AVAHI_BROWSER_REMOVE:
		service_remove(d, iface, proto, name, domain);
		break;
	case AVAHI_BROWSER_FAILURE:
		log_warn("mDNS: browsing failed: %s", avahi_strerror(avahi_client_errno(c)));
		break;
	case AVAHI_BROWSER_ALL_FOR_NOW:
	case AVAHI_BROWSER_CACHE_EXHAUSTED:
		break;
	}
}

/* ---- publishing ---- */

static void
on_group_state(AvahiEntryGroup *g, AvahiEntryGroupState state, void *arg)
{
	struct discovery *d = arg;
	char *old;

	/* Also called from inside avahi_entry_group_new(): use g, not d->group. */
	if (d->stopping)
		return;
	switch (state) {
	case AVAHI_ENTRY_GROUP_ESTABLISHED:
		log_info("mDNS: published \"%s\" (%s, port %u)", d->name, DISCOVERY_SERVICE_TYPE,
			 (unsigned)d->port);
		break;
	case AVAHI_ENTRY_GROUP_COLLISION:
		old = avahi_strdup(d->name);
		service_rename(d);
		log_info("mDNS: the name \"%s\" is taken on the network; trying \"%s\"",
			 old ? old : "?", d->name);
		avahi_free(old);
		avahi_entry_group_reset(g);
		d->published = 0;
		publish(d, avahi_entry_group_get_client(g));
		break;
	case AVAHI_ENTRY_GROUP_FAILURE:
		log_warn("mDNS: publishing \"%s\" failed: %s", d->name,
			 avahi_strerror(avahi_client_errno(avahi_entry_group_get_client(g))));
		break;
	case AVAHI_ENTRY_GROUP_UNCOMMITED:
	case AVAHI_ENTRY_GROUP_REGISTERING:
		break;
	}
}

static void
publish(struct discovery *d, AvahiClient *c)
{
	char txt[3 + ID_MAX + 1];
	int rc = 0;

	if (d->published)
		return;
	if (!d->group) {
		d->group = avahi_entry_group_new(c, on_group_state, d);
		if (!d->group) {
			log_warn("mDNS: cannot publish: %s", avahi_strerror(avahi_client_errno(c)));
			return;
		}
	}
	snprintf(txt, sizeof(txt), "id=%s", d->id);
	for (int tries = 0; tries <= MAX_RENAMES; tries++) {
		rc = avahi_entry_group_add_service(d->group, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, 0,
						   d->name, DISCOVERY_SERVICE_TYPE, NULL, NULL,
						   d->port, txt, NULL);
		if (rc != AVAHI_ERR_COLLISION)
			break;
		log_info("mDNS: the name \"%s\" is taken on this host", d->name);
		service_rename(d);
	}
	if (rc == 0)
		rc = avahi_entry_group_commit(d->group);
	if (rc < 0) {
		log_warn("mDNS: cannot publish \"%s\": %s", d->name, avahi_strerror(rc));
		return;
	}
	d->published = 1;
}

static void
browse(struct discovery *d, AvahiClient *c)
{
	if (d->browser)
		return;
	d->browser = avahi_service_browser_new(c, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC,
					       DISCOVERY_SERVICE_TYPE, NULL, 0, on_browse, d);
	if (!d->browser)
		log_warn("mDNS: cannot browse: %s", avahi_strerror(avahi_client_errno(c)));
}

/* ---- the client ---- */

static void
on_retry(uv_timer_t *t)
{
	struct discovery *d = t->data;

	if (d->client) {
		avahi_client_free(d->client);
		d->client = NULL;
	}
	d->group = NULL;
	d->browser = NULL;
	d->published = 0;
	services_forget(d);
	client_open(d);
}

static void
retry_in(struct discovery *d, unsigned ms)
{
	if (d->stopping)
		return;
	uv_update_time(d->loop); /* a D-Bus call may just have blocked */
	uv_timer_start(&d->retry, on_retry, ms, 0);
}

static unsigned
backoff_next(struct discovery *d)
{
	unsigned ms = d->backoff_ms;

	d->backoff_ms = ms >= RETRY_MAX_MS / 2 ? RETRY_MAX_MS : ms * 2;
	return ms;
}

/* Says once per outage that mDNS is unavailable. */
static void
unavailable(struct discovery *d, const char *why)
{
	if (d->down_logged) {
		log_debug("mDNS: still unavailable: %s", why);
		return;
	}
	d->down_logged = 1;
	if (d->was_running)
		log_warn("mDNS: lost avahi-daemon (%s); devices are reached at their configured "
			 "addresses until it is back",
			 why);
	else
		log_info("mDNS: avahi-daemon is not available (%s); devices are reached at their "
			 "configured addresses, retrying in the background",
			 why);
}

static void
on_client_state(AvahiClient *c, AvahiClientState state, void *arg)
{
	struct discovery *d = arg;

	/* Also called from inside avahi_client_new(): use c, not d->client. */
	if (d->stopping)
		return; /* a deferred stop is pending on the retry timer */
	switch (state) {
	case AVAHI_CLIENT_S_RUNNING:
		uv_timer_stop(&d->retry);
		if (d->down_logged)
			log_info("mDNS: avahi-daemon is available");
		d->connected = 1;
		d->was_running = 1;
		d->down_logged = 0;
		d->backoff_ms = RETRY_FIRST_MS;
		publish(d, c);
		browse(d, c);
		break;
	case AVAHI_CLIENT_S_REGISTERING:
	case AVAHI_CLIENT_S_COLLISION:
		/* The daemon's host name changes: withdraw, publish again on S_RUNNING. */
		uv_timer_stop(&d->retry);
		d->connected = 1;
		if (d->group && d->published)
			avahi_entry_group_reset(d->group);
		d->published = 0;
		break;
	case AVAHI_CLIENT_CONNECTING:
		d->connected = 0;
		unavailable(d, "avahi-daemon is not running");
		retry_in(d, backoff_next(d)); /* the watchdog */
		break;
	case AVAHI_CLIENT_FAILURE:
		d->connected = 0;
		unavailable(d, avahi_strerror(avahi_client_errno(c)));
		retry_in(d, d->was_running ? RETRY_LOST_MS : backoff_next(d));
		d->was_running = 0;
		break;
	}
}

static void
client_open(struct discovery *d)
{
	AvahiClient *c;
	int err = 0;

	d->was_running = 0;
	c = avahi_client_new(avpoll_api(d->poll), AVAHI_CLIENT_NO_FAIL, on_client_state, d, &err);
	if (!c) {
		/* Whatever the state callback made went with the client. */
		d->connected = 0;
		d->group = NULL;
		d->browser = NULL;
		d->published = 0;
		services_forget(d);
		unavailable(d, avahi_strerror(err));
		retry_in(d, backoff_next(d));
		return;
	}
	d->client = c;
}

/* ---- the API ---- */

int
discovery_start(uv_loop_t *loop, const char *device_id, const char *device_name, int port,
		void (*on_found)(void *arg, const char *device_id, const char *addr), void *arg,
		struct discovery **out)
{
	struct discovery *d;

	*out = NULL;
	if (port <= 0 || port > 65535 || !device_id || strlen(device_id) >= ID_MAX)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->loop = loop;
	d->port = (uint16_t)port;
	d->on_found = on_found;
	d->arg = arg;
	d->backoff_ms = RETRY_FIRST_MS;
	d->id = strdup(device_id);
	d->name = service_name(device_id, device_name);
	d->poll = avpoll_new(loop);
	if (!d->id || !d->name || !d->poll) {
		avpoll_free(d->poll);
		avahi_free(d->name);
		free(d->id);
		free(d);
		return -ENOMEM;
	}
	uv_timer_init(loop, &d->retry);
	d->retry.data = d;
	client_open(d);
	*out = d;
	return 0;
}

static void
on_retry_closed(uv_handle_t *h)
{
	struct discovery *d = h->data;

	avahi_free(d->name);
	free(d->id);
	free(d);
}

static void
teardown(struct discovery *d)
{
	uv_timer_stop(&d->retry);
	/* Frees the group (the daemon withdraws the service), browser and resolvers. */
	if (d->client)
		avahi_client_free(d->client);
	d->client = NULL;
	d->group = NULL;
	d->browser = NULL;
	services_forget(d);
	avpoll_free(d->poll);
	d->poll = NULL;
	uv_close((uv_handle_t *)&d->retry, on_retry_closed);
}

static void
on_deferred_stop(uv_timer_t *t)
{
	teardown(t->data);
}

void
discovery_stop(struct discovery *d)
{
	if (!d || d->stopping)
		return;
	d->stopping = 1;
	d->connected = 0;
	if (d->in_callback) {
		/* Inside on_found, thus inside a client callback: not the place to free it. */
		uv_timer_start(&d->retry, on_deferred_stop, 0, 0);
		return;
	}
	teardown(d);
}

int
discovery_running(const struct discovery *d)
{
	return d && d->connected;
}
