//go:build cgo && linux

package login

/*
#cgo LDFLAGS: -lpam
#define _GNU_SOURCE
#include <security/pam_appl.h>
#include <stdlib.h>
#include <string.h>
#include <utmpx.h>
#include <sys/time.h>

// What modules say (motd, "Last login", why an account is refused), kept
// for the Go side: nobody can answer a prompt yet, since the page attaches
// only after the shell is open, and the person already proved who they
// are with a passkey, so every prompt fails the conversation.
struct sluice_msgs { char buf[16384]; size_t len; };

static int sluice_conv(int n, const struct pam_message **msg, struct pam_response **resp, void *data) {
	struct sluice_msgs *m = data;
	int i;
	if (n <= 0 || n > PAM_MAX_NUM_MSG) return PAM_CONV_ERR;
	for (i = 0; i < n; i++) {
		int style = msg[i]->msg_style;
		if (style != PAM_ERROR_MSG && style != PAM_TEXT_INFO) return PAM_CONV_ERR;
	}
	struct pam_response *r = calloc(n, sizeof *r);
	if (r == NULL) return PAM_BUF_ERR;
	for (i = 0; i < n; i++) {
		const char *s = msg[i]->msg ? msg[i]->msg : "";
		size_t l = strlen(s);
		if (m->len + l + 2 < sizeof m->buf) {
			memcpy(m->buf + m->len, s, l);
			m->len += l;
			m->buf[m->len++] = '\n';
			m->buf[m->len] = 0;
		}
	}
	*resp = r;
	return PAM_SUCCESS;
}

static int sluice_pam_start(const char *service, const char *user, struct sluice_msgs *m, pam_handle_t **h) {
	// pam_start copies the struct; m is C memory and outlives the handle.
	struct pam_conv c = { sluice_conv, m };
	return pam_start(service, user, &c, h);
}

static int sluice_set_str(pam_handle_t *h, int item, const char *v) {
	return pam_set_item(h, item, v);
}

static void sluice_utmp(short type, pid_t pid, const char *line, const char *id, const char *user) {
	struct utmpx ut;
	struct timeval tv;
	memset(&ut, 0, sizeof ut);
	ut.ut_type = type;
	ut.ut_pid = pid;
	strncpy(ut.ut_line, line, sizeof ut.ut_line);
	strncpy(ut.ut_id, id, sizeof ut.ut_id);
	strncpy(ut.ut_user, user, sizeof ut.ut_user);
	strncpy(ut.ut_host, "sluice", sizeof ut.ut_host);
	gettimeofday(&tv, NULL);
	ut.ut_tv.tv_sec = tv.tv_sec;
	ut.ut_tv.tv_usec = tv.tv_usec;
	setutxent();
	pututxline(&ut);
	endutxent();
	updwtmpx("/var/log/wtmp", &ut);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// Service is the PAM service a sluice login runs under: the host's own
// "login" stack, so what an administrator configured for logins
// (pam_access, pam_limits, pam_loginuid, pam_systemd, pam_lastlog, motd)
// applies to sluice sessions too. Its auth phase is not run: the passkey
// is the authentication.
var Service = "login"

type pamSession struct {
	h      *C.pam_handle_t
	msgs   *C.struct_sluice_msgs
	opened bool
	cred   bool
}

func pamStart(user, tty string) (*pamSession, error) {
	p := &pamSession{msgs: (*C.struct_sluice_msgs)(C.calloc(1, C.sizeof_struct_sluice_msgs))}
	if p.msgs == nil {
		return nil, errors.New("login: pam: out of memory")
	}
	cs, cu := C.CString(Service), C.CString(user)
	defer C.free(unsafe.Pointer(cs))
	defer C.free(unsafe.Pointer(cu))
	if rc := C.sluice_pam_start(cs, cu, p.msgs, &p.h); rc != C.PAM_SUCCESS {
		C.free(unsafe.Pointer(p.msgs))
		return nil, fmt.Errorf("login: pam_start %s: error %d", Service, int(rc))
	}
	for item, v := range map[C.int]string{C.PAM_TTY: tty, C.PAM_RHOST: "", C.PAM_RUSER: user} {
		cv := C.CString(v)
		rc := C.sluice_set_str(p.h, item, cv)
		C.free(unsafe.Pointer(cv))
		if rc != C.PAM_SUCCESS {
			p.end(rc)
			return nil, fmt.Errorf("login: pam_set_item: %s", p.strerror(rc))
		}
	}
	return p, nil
}

func (p *pamSession) strerror(rc C.int) string {
	return C.GoString(C.pam_strerror(p.h, rc))
}

// messages returns and forgets what modules said so far.
func (p *pamSession) messages() string {
	s := C.GoStringN(&p.msgs.buf[0], C.int(p.msgs.len))
	p.msgs.len = 0
	p.msgs.buf[0] = 0
	return s
}

// refusal is a PAM failure in words for the page: the module's own
// message when it said one, else PAM's name for the code.
func (p *pamSession) refusal(phase string, rc C.int) error {
	said := strings.Join(strings.Fields(p.messages()), " ")
	text := p.strerror(rc)
	if rc == C.PAM_NEW_AUTHTOK_REQD {
		text = "the password has expired and must be changed first (passwd), then sign in again"
	}
	if said != "" {
		text = said + " (" + text + ")"
	}
	return fmt.Errorf("%w: %s: %s", ErrRefused, phase, text)
}

// account runs the account phase: expiry, pam_access, pam_time, ...
func (p *pamSession) account() error {
	if rc := C.pam_acct_mgmt(p.h, 0); rc != C.PAM_SUCCESS {
		return p.refusal("account", rc)
	}
	return nil
}

// open establishes credentials and opens the session: loginuid, limits,
// lastlog, motd, logind.
func (p *pamSession) open() error {
	if rc := C.pam_setcred(p.h, C.PAM_ESTABLISH_CRED); rc != C.PAM_SUCCESS {
		return p.refusal("credentials", rc)
	}
	p.cred = true
	if rc := C.pam_open_session(p.h, 0); rc != C.PAM_SUCCESS {
		return p.refusal("session", rc)
	}
	p.opened = true
	return nil
}

// env is the environment the modules set (pam_env, pam_mail, pam_systemd).
func (p *pamSession) env() []string {
	list := C.pam_getenvlist(p.h)
	if list == nil {
		return nil
	}
	var env []string
	for i := 0; ; i++ {
		e := *(**C.char)(unsafe.Pointer(uintptr(unsafe.Pointer(list)) + uintptr(i)*unsafe.Sizeof(*list)))
		if e == nil {
			break
		}
		env = append(env, C.GoString(e))
		C.free(unsafe.Pointer(e))
	}
	C.free(unsafe.Pointer(list))
	return env
}

// close undoes open, as far as it went, and ends the handle.
func (p *pamSession) close() {
	var rc C.int = C.PAM_SUCCESS
	if p.opened {
		rc = C.pam_close_session(p.h, 0)
	}
	if p.cred {
		C.pam_setcred(p.h, C.PAM_DELETE_CRED)
	}
	p.end(rc)
}

func (p *pamSession) end(rc C.int) {
	C.pam_end(p.h, rc)
	C.free(unsafe.Pointer(p.msgs))
	p.h, p.msgs = nil, nil
}

// utmpLogin and utmpLogout write the session's utmp entry and its wtmp
// records, as login does: line "pts/N", id its last four bytes.
func utmpLogin(pid int, line, user string) { utmp(C.USER_PROCESS, pid, line, user) }

func utmpLogout(pid int, line string) { utmp(C.DEAD_PROCESS, pid, line, "") }

func utmp(typ C.short, pid int, line, user string) {
	id := line
	if len(id) > 4 {
		id = id[len(id)-4:]
	}
	cl, ci, cu := C.CString(line), C.CString(id), C.CString(user)
	defer C.free(unsafe.Pointer(cl))
	defer C.free(unsafe.Pointer(ci))
	defer C.free(unsafe.Pointer(cu))
	C.sluice_utmp(typ, C.pid_t(pid), cl, ci, cu)
}
