/*
 * CAP_NET_BIND_SERVICE around the listeners' bind (caps.h). capget(2) and
 * capset(2) through syscall(2): glibc has no wrappers, and libcap would be
 * one more library in the image for two system calls.
 */
#include "core/caps.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#define IDX CAP_TO_INDEX(CAP_NET_BIND_SERVICE)
#define BIT CAP_TO_MASK(CAP_NET_BIND_SERVICE)

/* Version 3: 64-bit sets, two words. pid 0: the calling thread. */
static int caps_get(struct __user_cap_data_struct d[2])
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return (int)syscall(SYS_capget, &h, d);
}

static int caps_set(struct __user_cap_data_struct d[2])
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return (int)syscall(SYS_capset, &h, d);
}

bool kiln_caps_bind_begin(void)
{
    struct __user_cap_data_struct d[2];
    if (caps_get(d) != 0 || !(d[IDX].permitted & BIT))
        return false;
    if (d[IDX].effective & BIT)
        return true;
    d[IDX].effective |= BIT;
    return caps_set(d) == 0;
}

void kiln_caps_bind_end(void)
{
    struct __user_cap_data_struct d[2];
    if (caps_get(d) != 0 || !((d[IDX].permitted | d[IDX].effective) & BIT))
        return;
    /* Lowering is always allowed (capset(2)): effective must stay within
     * permitted, so both go at once. An ambient copy, if any, goes with
     * the permitted bit. */
    d[IDX].effective &= ~BIT;
    d[IDX].permitted &= ~BIT;
    (void)caps_set(d);
}
