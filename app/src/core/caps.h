/*
 * Linux capabilities, for one purpose: binding a port below 1024 (the
 * original's task definitions say PORT=443) as the image's non-root user.
 *
 * The image gives /usr/local/bin/kiln the file capability
 * cap_net_bind_service=+p: permitted, not effective (Dockerfile). Not
 * effective on purpose: a file capability with the effective bit makes
 * execve fail with EPERM wherever the container's bounding set lacks it,
 * and ECS task definitions (Kiln's own included) drop ALL capabilities;
 * without the bit the binary starts everywhere, and where the capability
 * was dropped there is simply nothing to raise. Kiln raises it into the
 * effective set of the thread that binds the listeners for the bind only,
 * then removes it from that thread's sets for good.
 *
 * Capabilities belong to threads: these calls change the calling thread's
 * sets, and threads created afterwards inherit them. Threads started before
 * the listeners are bound (the secret reload thread) keep the capability
 * permitted but not effective: they cannot bind a low port without calling
 * capset(2) first.
 */
#ifndef KILN_CAPS_H
#define KILN_CAPS_H

#include <stdbool.h>

/* Make CAP_NET_BIND_SERVICE effective in the calling thread when it is
 * permitted. true when it is effective afterwards (root has it already). */
bool kiln_caps_bind_begin(void);

/* Remove CAP_NET_BIND_SERVICE from the calling thread's effective and
 * permitted sets: no later code of this thread, or of a thread it starts,
 * can bind a port below 1024. Harmless when it was not there. */
void kiln_caps_bind_end(void);

#endif
