/* ran: writes RAN and exits 0, with no C library and no loader of its own.
 *
 * It stands for a denied binary that is also run as a script's interpreter
 * or as another binary's loader (PT_INTERP): tests/security/test_exec_rules.py.
 * As a loader it is started with the auxiliary vector of the binary that
 * names it (AT_PHDR and AT_ENTRY are that binary's), which a static glibc
 * would take for its own: hence raw system calls from _start (x86_64). */
static long sys3(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
}

void _start(void)
{
	static const char msg[] = "RAN\n";
	sys3(1, 1, (long)msg, sizeof msg - 1); /* write(1, msg, 4) */
	sys3(60, 0, 0, 0);                     /* exit(0) */
	for (;;)
		;
}
