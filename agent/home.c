/*
 * agent/home.c - locating the state directory and the device identity.
 */
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/home.h"
#include "agent/util.h"

static const char *
user_home(void)
{
	const char *h = getenv("HOME");
	if (h && h[0])
		return h;
	struct passwd *pw = getpwuid(getuid());
	return pw && pw->pw_dir ? pw->pw_dir : "/";
}

char *
home_resolve(const char *opt)
{
	const char *e;
	char *base, *r;

	if (opt && opt[0])
		return strdup(opt);
	if ((e = getenv("SHOAL_HOME")) && e[0])
		return strdup(e);
	if ((e = getenv("XDG_STATE_HOME")) && e[0])
		return path_join(e, "shoal");
	base = path_join(user_home(), ".local/state");
	if (!base)
		return NULL;
	r = path_join(base, "shoal");
	free(base);
	return r;
}

int
home_ensure(const char *home)
{
	return mkdir_p(home, 0700);
}

char *
home_file(const char *home, const char *name)
{
	return path_join(home, name);
}

int
home_identity(const char *home, struct sec_identity *id, int create, int *created)
{
	char *path = home_file(home, "device.key");
	int rc;

	if (created)
		*created = 0;
	if (!path)
		return -ENOMEM;
	rc = sec_identity_load(id, path);
	if (rc == -ENOENT && create) {
		sec_identity_release(id);
		rc = home_ensure(home);
		if (rc == 0)
			rc = sec_identity_generate(id);
		if (rc == 0)
			rc = sec_identity_save(id, path);
		if (rc == 0 && created)
			*created = 1;
	}
	free(path);
	return rc;
}

char *
home_default_folder(void)
{
	return path_join(user_home(), "Shoal");
}
