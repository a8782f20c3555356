/*
 * macOS fork semantics on glibc, for forkprof's tests (tests/macos_semantics.rs).
 *
 * Loaded with LD_PRELOAD into a test binary only. It replaces glibc's atfork machinery with
 * the one macOS's libpthread has (docs/fork-protocol.md, "Per platform"):
 *   - one non-recursive lock, taken before the first prepare handler and released only after
 *     the last parent handler; in the child it is re-initialised after the child handlers;
 *   - pthread_atfork takes the same lock, so registering during a fork blocks until the fork
 *     ends, and registering from inside a handler deadlocks (macOS's os_unfair_lock aborts on
 *     recursion: so do we, with a message);
 *   - prepare handlers run in reverse registration order, parent and child ones in order;
 *   - getaddrinfo registers atfork handlers once per process on its first call (Libinfo's
 *     si_destination_compare_init_once), behind a pthread_once.
 *
 * Interposed: pthread_atfork, __register_atfork (what glibc >= 2.34's pthread_atfork wrapper
 * in libc_nonshared.a calls, so what a Rust binary's libc::pthread_atfork reaches), fork and
 * getaddrinfo. Not simulated: dyld's dlopen lock, dlclose unregistering handlers.
 *
 * Environment, read once at load time:
 *   MACOS_SIM_GAI_DELAY_MS=N   the first getaddrinfo waits N ms before registering (a lookup
 *                              that takes time before it reaches pthread_atfork);
 *   MACOS_SIM_GAI_AWAIT_FORK=1 the first getaddrinfo registers only once a fork holds the
 *                              atfork lock, and the first fork holds it (before running any
 *                              prepare handler, up to 2 s) until that registration is waiting
 *                              for it: the window the Datadog PHP profiler deadlocked in, made
 *                              certain instead of left to timing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct handler {
	void (*prepare)(void);
	void (*parent)(void);
	void (*child)(void);
};

/* A fixed table, like libpthread's: no allocation under the lock or in a child. */
#define MAX_HANDLERS 256
static struct handler handlers[MAX_HANDLERS];
static size_t n_handlers;
static pthread_mutex_t atfork_lock;

static pid_t (*real_fork)(void);
static int (*real_getaddrinfo)(const char *, const char *, const struct addrinfo *,
			       struct addrinfo **);

static unsigned gai_delay_ms;
static int gai_await_fork;
static pthread_once_t gai_once = PTHREAD_ONCE_INIT;

/* A fork holds the atfork lock right now (between its prepare and parent/child halves). */
static atomic_int fork_in_progress;
/* AWAIT_FORK: the lazy registration is about to wait for the lock; the first fork lingered. */
static atomic_int gai_registrant_waiting;
static atomic_int first_fork_done;

/* Counters the tests read through forkprof_macos_sim_stats(). */
static atomic_ulong stat_forks;
static atomic_ulong stat_registrations;
static atomic_ulong stat_registrations_blocked;
static atomic_ulong stat_registrations_blocked_by_fork;
static atomic_ulong stat_gai_calls;
static atomic_ulong stat_gai_registrations;

static void sleep_us(unsigned long us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void say(const char *msg)
{
	ssize_t r = write(2, msg, strlen(msg));
	(void)r;
}

static void init_lock(void)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	/* Error-checking, so that recursion is reported (macOS aborts) instead of hanging. */
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
	pthread_mutex_init(&atfork_lock, &a);
	pthread_mutexattr_destroy(&a);
}

__attribute__((constructor)) static void macos_sim_init(void)
{
	init_lock();
	real_fork = (pid_t(*)(void))dlsym(RTLD_NEXT, "fork");
	real_getaddrinfo = (int (*)(const char *, const char *, const struct addrinfo *,
				    struct addrinfo **))dlsym(RTLD_NEXT, "getaddrinfo");
	if (!real_fork || !real_getaddrinfo) {
		say("macos_sim: cannot find libc's fork/getaddrinfo\n");
		abort();
	}
	const char *d = getenv("MACOS_SIM_GAI_DELAY_MS");
	if (d)
		gai_delay_ms = (unsigned)strtoul(d, NULL, 10);
	const char *w = getenv("MACOS_SIM_GAI_AWAIT_FORK");
	gai_await_fork = w && w[0] == '1';
}

static void lock_atfork(const char *who, int registering)
{
	int rc = pthread_mutex_trylock(&atfork_lock);
	if (rc == 0)
		return;
	if (rc == EBUSY) {
		if (registering) {
			atomic_fetch_add(&stat_registrations_blocked, 1);
			if (atomic_load(&fork_in_progress))
				atomic_fetch_add(&stat_registrations_blocked_by_fork, 1);
		}
		rc = pthread_mutex_lock(&atfork_lock);
	}
	if (rc == EDEADLK) {
		say("macos_sim: pthread_atfork_lock taken recursively (from ");
		say(who);
		say("): macOS aborts here\n");
		abort();
	}
	if (rc != 0) {
		say("macos_sim: pthread_atfork_lock failed\n");
		abort();
	}
}

static int register_handlers(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	lock_atfork("pthread_atfork", 1);
	int rc = 0;
	if (n_handlers < MAX_HANDLERS) {
		handlers[n_handlers].prepare = prepare;
		handlers[n_handlers].parent = parent;
		handlers[n_handlers].child = child;
		n_handlers++;
		atomic_fetch_add(&stat_registrations, 1);
	} else {
		rc = ENOMEM;
	}
	pthread_mutex_unlock(&atfork_lock);
	return rc;
}

int pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	return register_handlers(prepare, parent, child);
}

int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
		      void *dso_handle)
{
	(void)dso_handle;
	return register_handlers(prepare, parent, child);
}

pid_t fork(void)
{
	lock_atfork("fork", 0);
	atomic_store(&fork_in_progress, 1);
	if (gai_await_fork && !atomic_exchange(&first_fork_done, 1)) {
		/* Linger until the lazy registration waits for this fork (bounded: a process whose
		 * lookups started elsewhere must still fork). */
		for (int i = 0; i < 20000 && !atomic_load(&gai_registrant_waiting); i++)
			sleep_us(100);
	}
	for (size_t i = n_handlers; i > 0; i--)
		if (handlers[i - 1].prepare)
			handlers[i - 1].prepare();
	/* glibc's own fork: it has no handlers of its own to run (every registration came here)
	 * and it takes and resets malloc's and stdio's locks, as Libsystem does for its own. */
	pid_t pid = real_fork();
	int saved = errno;
	if (pid == 0) {
		for (size_t i = 0; i < n_handlers; i++)
			if (handlers[i].child)
				handlers[i].child();
		atomic_store(&fork_in_progress, 0);
		/* The forking thread has a new tid here: re-initialise, as libpthread does. */
		init_lock();
	} else {
		if (pid > 0)
			atomic_fetch_add(&stat_forks, 1);
		for (size_t i = 0; i < n_handlers; i++)
			if (handlers[i].parent)
				handlers[i].parent();
		atomic_store(&fork_in_progress, 0);
		pthread_mutex_unlock(&atfork_lock);
	}
	errno = saved;
	return pid;
}

/* What Libinfo's once-only registrations stand for; they do no work. */
static void gai_prepare(void) {}
static void gai_parent(void) {}
static void gai_child(void) {}


static void gai_register_once(void)
{
	if (gai_delay_ms)
		sleep_us(gai_delay_ms * 1000UL);
	if (gai_await_fork) {
		for (int i = 0; i < 100000 && !atomic_load(&fork_in_progress); i++)
			sleep_us(100);
		atomic_store(&gai_registrant_waiting, 1);
	}
	if (pthread_atfork(gai_prepare, gai_parent, gai_child) == 0)
		atomic_fetch_add(&stat_gai_registrations, 1);
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		struct addrinfo **res)
{
	atomic_fetch_add(&stat_gai_calls, 1);
	pthread_once(&gai_once, gai_register_once);
	return real_getaddrinfo(node, service, hints, res);
}

/* For the tests: proves the library is loaded, and what it saw. */
struct forkprof_macos_sim_stats {
	unsigned long forks;
	unsigned long registrations;
	unsigned long registrations_blocked;
	unsigned long registrations_blocked_by_fork;
	unsigned long gai_calls;
	unsigned long gai_registrations;
	unsigned long handlers;
};

void forkprof_macos_sim_stats(struct forkprof_macos_sim_stats *out)
{
	out->forks = atomic_load(&stat_forks);
	out->registrations = atomic_load(&stat_registrations);
	out->registrations_blocked = atomic_load(&stat_registrations_blocked);
	out->registrations_blocked_by_fork = atomic_load(&stat_registrations_blocked_by_fork);
	out->gai_calls = atomic_load(&stat_gai_calls);
	out->gai_registrations = atomic_load(&stat_gai_registrations);
	out->handlers = n_handlers;
}
