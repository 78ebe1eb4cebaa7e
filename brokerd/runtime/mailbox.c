#include "runtime/mailbox.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"

struct Mailbox {
        pthread_mutex_t lock;
        MailboxMsg *head, *tail;
        int efd;
        sd_event_source *source;
};

static int on_mail(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        (void) mailbox_dispatch(userdata);
        return 0;
}

int mailbox_new(sd_event *event, Mailbox **ret)
{
        Mailbox *m = calloc(1, sizeof(Mailbox));
        int r;

        if (!m)
                return -ENOMEM;
        pthread_mutex_init(&m->lock, NULL);
        m->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (m->efd < 0) {
                r = log_error_errno(errno, "eventfd: %m");
                mailbox_free(m);
                return r;
        }
        if (event) {
                r = sd_event_add_io(event, &m->source, m->efd, EPOLLIN, on_mail, m);
                if (r < 0) {
                        mailbox_free(m);
                        return log_error_errno(r, "Cannot watch the mailbox: %m");
                }
                (void) sd_event_source_set_description(m->source, "mailbox");
        }
        *ret = m;
        return 0;
}

void mailbox_free(Mailbox *m)
{
        if (!m)
                return;
        sd_event_source_disable_unref(m->source);
        if (m->efd >= 0)
                close(m->efd);
        pthread_mutex_destroy(&m->lock);
        free(m);
}

void mailbox_post(Mailbox *m, MailboxMsg *msg)
{
        bool was_empty;

        msg->next = NULL;
        pthread_mutex_lock(&m->lock);
        was_empty = !m->head;
        if (m->tail)
                m->tail->next = msg;
        else
                m->head = msg;
        m->tail = msg;
        pthread_mutex_unlock(&m->lock);
        /* The loop takes the whole list at once: a list that was not empty has a wakeup on the
         * way already. */
        if (was_empty)
                (void) eventfd_write(m->efd, 1);
}

size_t mailbox_dispatch(Mailbox *m)
{
        MailboxMsg *list;
        eventfd_t v;
        size_t n = 0;

        /* Read first: a post after the list is taken below then wakes the loop again. */
        (void) eventfd_read(m->efd, &v);
        pthread_mutex_lock(&m->lock);
        list = m->head;
        m->head = m->tail = NULL;
        pthread_mutex_unlock(&m->lock);
        for (MailboxMsg *next; list; list = next, n++) {
                next = list->next;
                list->run(list);
        }
        return n;
}

void mailbox_wait(Mailbox *m, int timeout_ms)
{
        struct pollfd p = {.fd = m->efd, .events = POLLIN};

        (void) poll(&p, 1, timeout_ms);
}
