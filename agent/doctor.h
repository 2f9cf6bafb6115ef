/*
 * agent/doctor.h - `shoal doctor`: checks what the agent needs from this
 * machine and explains, in plain words, how to fix what is wrong.
 *
 * The doctor only reads: it never changes the configuration, the state
 * directory or the folders (the one exception is a listening socket it opens
 * and closes at once to learn whether the listen port is free). It works
 * whether or not an agent runs, and is meant to be run as the user the agent
 * runs as (for the system service: sudo -u shoal shoal --home /var/lib/shoal
 * doctor), since permissions are judged for the current user.
 *
 * Usage text for agent/main.c (the `doctor` subcommand; a line for the
 * command list of usage_main, then usage_doctor):
 *
 *   "  doctor [--json]                    check this machine and explain what to fix\n"
 *
 *   static const char usage_doctor[] =
 *	"usage: shoal [--home DIR] doctor [--json]\n"
 *	"\n"
 *	"Checks what the agent needs and says how to fix what is wrong: the state\n"
 *	"directory's owner and permissions and the device key's, the configuration,\n"
 *	"the clock, whether the listen port is free (or held by this agent), whether\n"
 *	"avahi-daemon answers, that each folder exists, is writable and has its\n"
 *	".shoal-folder marker (and, for the system service, lies in its\n"
 *	"ReadWritePaths), the inotify watch limit against the folders' directories,\n"
 *	"and free disk space. Run it as the user the agent runs as, e.g.\n"
 *	"  sudo -u shoal shoal --home /var/lib/shoal doctor\n"
 *	"Each check prints \"ok\", \"warn\" or \"fail\", its name and an explanation,\n"
 *	"and for a problem a \"fix:\" line. With --json, one object:\n"
 *	"{\"checks\":[{\"name\",\"status\",\"message\",\"fix\"}],\"ok\":BOOL}.\n"
 *	"Exits 0 when no check failed, 1 otherwise.\n";
 *
 * main.c parses `[--json]` (and --help) and calls doctor_run(home, json)
 * with home from home_resolve(opt_home).
 */
#ifndef SHOAL_AGENT_DOCTOR_H
#define SHOAL_AGENT_DOCTOR_H

/*
 * Runs every check for the state directory home (already resolved; it need
 * not exist) and prints the report on stdout: one line per check
 * ("ok|warn|fail  NAME: explanation", plus "  fix: ..." for a warning or a
 * failure), or with json set one JSON object. Returns the exit code: 0 when
 * no check failed, 1 otherwise (also when out of memory). Single-threaded;
 * call it from the command line only, not from within a running agent.
 */
int doctor_run(const char *home, int json);

#endif
