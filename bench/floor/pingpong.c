/* The floor for bench/roundtrip.R: a 100-byte message to another process
 * and back over a Unix socketpair, the transport local daemons use, with
 * nothing else on the path (no framing, no serialization, no threads).
 *
 *   pingpong REPS    both ends block in read(), as an idle daemon waits in
 *                    poll(): a wake-up per message, as mirai has. (Both
 *                    ends spinning instead measured 3 us on an idle machine
 *                    but 500 us under load, two spinners on two busy
 *                    cores: no floor to compare with.)
 * Prints the mean round trip in microseconds (REPS after 1,000 warm-up). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 100

static int xfer(int fd, char *buf, int out) {
  size_t done = 0;
  while (done < MSG) {
    ssize_t k = out ? write(fd, buf + done, MSG - done)
                    : read(fd, buf + done, MSG - done);
    if (k > 0) { done += (size_t) k; continue; }
    if (k == 0) return -1;
    if (errno != EINTR) return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  long reps = argc > 1 ? atol(argv[1]) : 10000;
  int sv[2];
  char buf[MSG] = {0};
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); return 1; }
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); return 1; }
  if (pid == 0) {
    close(sv[0]);
    while (xfer(sv[1], buf, 0) == 0 && xfer(sv[1], buf, 1) == 0) {}
    _exit(0);
  }
  close(sv[1]);
  struct timespec t0, t1;
  for (long i = -1000; i < reps; i++) {
    if (i == 0) clock_gettime(CLOCK_MONOTONIC, &t0);
    if (xfer(sv[0], buf, 1) || xfer(sv[0], buf, 0)) { fprintf(stderr, "peer lost\n"); return 1; }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  close(sv[0]);
  waitpid(pid, NULL, 0);
  double us = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / reps;
  printf("%.3f\n", us);
  return 0;
}
