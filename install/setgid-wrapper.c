/*
 * setgid-wrapper - run one pymaster command with the setgid_group privilege.
 *
 * Postfix's postdrop and postqueue are set-group-ID `postdrop` so that any
 * user can write into maildrop/ (mode 0730) and reach public/ (mode 0710)
 * without being able to read the queue. The kernel ignores the set-group-ID
 * bit on interpreted scripts, so `make install` compiles this program once
 * per command, installs it as root:postdrop mode 2755, and it executes the
 * installed Python module with that group.
 *
 * Compile-time constants (install/install.py passes them with -D):
 *   PYTHON      absolute path of the venv's interpreter
 *   MODULE      the command's module, e.g. "pymaster.commands.postdrop"
 *   CONFIG_DIR  the default configuration directory
 *   PROGRAM     the command name, for messages
 *
 * What it guards against, since the caller controls its argv and environment:
 *   - the environment: replaced by a fixed minimal one, so nothing such as
 *     PYTHONPATH, PYTHONHOME, PYTHONSTARTUP, LD_PRELOAD or IFS reaches the
 *     interpreter; Python runs with -I (isolated: no user site directory, no
 *     PYTHON* variables, no current directory on the module path);
 *   - another configuration: for a caller other than root, `-c DIR` and
 *     MAIL_CONFIG are accepted only when DIR is CONFIG_DIR (Postfix asks for
 *     alternate_config_directories there; pymaster keeps it simpler);
 *   - the umask: set to 022 so that the files written stay readable by the
 *     mail system whatever the caller's umask was.
 * Only the effective group changes; the real uid and gid stay the caller's,
 * which is what postdrop records as the sender's uid.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef PYTHON
#error "compile with -DPYTHON=\"/path/to/venv/bin/python\""
#endif
#ifndef MODULE
#error "compile with -DMODULE=\"pymaster.commands.NAME\""
#endif
#ifndef CONFIG_DIR
#define CONFIG_DIR "/etc/postfix"
#endif
#ifndef PROGRAM
#define PROGRAM "pymaster"
#endif

#define EX_USAGE 64
#define EX_TEMPFAIL 75
#define MAX_ARGS 1000

/* Marker that `make install` looks for to tell its own files from others'. */
const char pymaster_marker[] = "pymaster-setgid-wrapper";

/* config_allowed - may this caller name configuration directory DIR? */
static int config_allowed(const char *dir)
{
    return getuid() == 0 || strcmp(dir, CONFIG_DIR) == 0;
}

/* check_args - refuse a -c option that names another configuration. */
static int check_args(int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];

        if (strcmp(arg, "--") == 0)
            break;
        if (arg[0] != '-' || strchr(arg, 'c') == NULL)
            continue;
        /* Only the plain form "-c DIR" is understood; a cluster holding a
         * 'c' could hide a configuration directory, so it is refused. */
        if (strcmp(arg, "-c") != 0 || i + 1 >= argc || !config_allowed(argv[i + 1])) {
            if (getuid() == 0)
                continue;
            fprintf(stderr, "%s: fatal: only root may use a configuration "
                    "directory other than %s\n", PROGRAM, CONFIG_DIR);
            return -1;
        }
        i++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static char *env[4];
    static char config_env[4096];
    char *args[MAX_ARGS + 8];
    const char *mail_config = getenv("MAIL_CONFIG");
    int n = 0, e = 0, i;

    if (argc < 1 || argc > MAX_ARGS) {
        fprintf(stderr, "%s: fatal: bad argument count\n", PROGRAM);
        return EX_USAGE;
    }
    if (check_args(argc, argv) < 0)
        return EX_USAGE;
    env[e++] = "PATH=/usr/bin:/bin";
    if (mail_config && config_allowed(mail_config)
        && strlen(mail_config) < sizeof(config_env) - 16) {
        snprintf(config_env, sizeof(config_env), "MAIL_CONFIG=%s", mail_config);
        env[e++] = config_env;
    }
    env[e] = NULL;

    args[n++] = PYTHON;
    args[n++] = "-I";
    args[n++] = "-c";
    args[n++] = "import sys; from " MODULE " import main; sys.argv[0] = '" PROGRAM "'; "
                "sys.exit(main(sys.argv[1:]))";
    for (i = 1; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;

    umask(022);
    execve(PYTHON, args, env);
    fprintf(stderr, "%s: fatal: execute %s: %s\n", PROGRAM, PYTHON, strerror(errno));
    return EX_TEMPFAIL;
}
