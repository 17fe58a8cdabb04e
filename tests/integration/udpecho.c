/* A UDP echo server for network tests: busybox has no UDP server applet.
 * udpecho PORT: every datagram on 0.0.0.0:PORT goes back to its sender, prefixed "echo:". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: udpecho PORT\n");
        return 2;
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("udpecho");
        return 1;
    }
    for (;;) {
        char buf[1500] = "echo:";
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(s, buf + 5, sizeof buf - 5, 0, (struct sockaddr *)&peer, &len);
        if (n >= 0)
            sendto(s, buf, (size_t)n + 5, 0, (struct sockaddr *)&peer, len);
    }
}
