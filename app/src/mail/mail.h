/*
 * Outgoing mail: one plain-text message to one address, by the provider
 * the configuration names (EMAIL_PROVIDER):
 *   log   the development default: one log line with the recipient and
 *         subject and the text with its secret (a link's token, a code)
 *         replaced by [redacted]; nothing is sent;
 *   smtp  libcurl to SMTP_URL: smtps:// (TLS from the first byte) or
 *         smtp:// (STARTTLS required, except to a loopback host);
 *   ses   Amazon SES v1 SendEmail (the Query API: one form POST, Source
 *         EMAIL_FROM, one To address, subject and text in UTF-8), signed
 *         with Kiln's SigV4 and the credentials chain of aws/aws.h, sent
 *         to AWS_ENDPOINT_URL_SES, AWS_ENDPOINT_URL or
 *         https://email.<AWS_REGION>.amazonaws.com.
 * Only the log provider logs anything, and never the secret; the text
 * (links, codes) never reaches a log or an error. Sending blocks: jobs
 * call it (a mail is a job, enqueued with the write that causes it),
 * never a loop.
 */
#ifndef KILN_MAIL_MAIL_H
#define KILN_MAIL_MAIL_H

#include <stddef.h>

#include "core/arena.h"
#include "core/config.h"

/* The longest address Kiln mails (RFC 5321's path limit less the
 * brackets). */
#define KILN_MAIL_ADDRESS_MAX 254

struct kiln_mail {
    const char *to;       /* one address, checked by kiln_mail_address_ok */
    const char *subject;  /* ASCII, from Kiln's templates */
    const char *text;     /* UTF-8, lines ended by \n */
    const char *secret;   /* the part of text the log provider hides, or NULL */
};

/* A plain address Kiln will write into a To: header: local@domain, no
 * spaces, quotes, angle brackets or control characters, at most 254
 * bytes (KILN_MAIL_ADDRESS_MAX), a dot in the domain. What sign-up accepts
 * as an email. */
bool kiln_mail_address_ok(const char *addr, size_t len);

/* Read the configuration (EMAIL_PROVIDER, EMAIL_FROM, SMTP_URL); once at
 * start, before any send. ses also reads aws/aws.h's settings at each
 * send (region, endpoint, credentials: kiln_aws_setup runs first). */
void kiln_mail_init(const struct kiln_config *cfg);

/*
 * Send m. 0; KILN_EUNAVAILABLE when it may work later: the job retries
 * (SMTP: the server could not be reached, a 4xx reply; SES: no connection
 * or credentials, Throttling, 429, a 5xx answer); KILN_EINVAL when it
 * never will (a refused address; SMTP: a 5xx reply; SES: MessageRejected
 * or any other 4xx answer). err gets a reason without secrets (no
 * password from SMTP_URL, no AWS key, m->secret replaced by [redacted]).
 */
int kiln_mail_send(kiln_arena *a, const struct kiln_mail *m, char *err, size_t errlen);

#endif
