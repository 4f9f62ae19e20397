package email_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/channels/email"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    email.Endpoint
		wantErr string // a part of the error; "" for success
	}{
		{"smtp:// is STARTTLS on 587 by default", "smtp://clinic:pw@smtp.example.org",
			email.Endpoint{Security: email.StartTLS, Host: "smtp.example.org", Port: 587, Username: "clinic", Password: "pw"}, ""},
		{"smtp:// keeps an explicit port", "smtp://clinic:pw@smtp.example.org:2525",
			email.Endpoint{Security: email.StartTLS, Host: "smtp.example.org", Port: 2525, Username: "clinic", Password: "pw"}, ""},
		{"smtps:// is implicit TLS on 465 by default", "smtps://clinic:pw@smtp.example.org",
			email.Endpoint{Security: email.ImplicitTLS, Host: "smtp.example.org", Port: 465, Username: "clinic", Password: "pw"}, ""},
		{"the scheme is case-insensitive", "SMTPS://clinic:pw@smtp.example.org:465",
			email.Endpoint{Security: email.ImplicitTLS, Host: "smtp.example.org", Port: 465, Username: "clinic", Password: "pw"}, ""},
		{"credentials are optional", "smtp://relay.internal.example:587",
			email.Endpoint{Security: email.StartTLS, Host: "relay.internal.example", Port: 587}, ""},
		{"percent-encoded credentials are decoded", "smtp://clinic%40example.org:p%40ss%3Aw%2Frd@smtp.example.org:587",
			email.Endpoint{Security: email.StartTLS, Host: "smtp.example.org", Port: 587, Username: "clinic@example.org", Password: "p@ss:w/rd"}, ""},
		{"an unencoded @ in the password is tolerated (the last @ ends the credentials)", "smtp://clinic:p@ss@smtp.example.org",
			email.Endpoint{Security: email.StartTLS, Host: "smtp.example.org", Port: 587, Username: "clinic", Password: "p@ss"}, ""},
		{"an IPv6 host is unbracketed", "smtp://clinic:pw@[2001:db8::25]:587",
			email.Endpoint{Security: email.StartTLS, Host: "2001:db8::25", Port: 587, Username: "clinic", Password: "pw"}, ""},
		{"a trailing slash is allowed", "smtp://clinic:pw@smtp.example.org:587/",
			email.Endpoint{Security: email.StartTLS, Host: "smtp.example.org", Port: 587, Username: "clinic", Password: "pw"}, ""},
		{"smtp+insecure:// to 127.0.0.1 is allowed", "smtp+insecure://127.0.0.1:1025",
			email.Endpoint{Security: email.Insecure, Host: "127.0.0.1", Port: 1025}, ""},
		{"smtp+insecure:// to localhost with credentials is allowed", "smtp+insecure://dev:devpw@localhost:1025",
			email.Endpoint{Security: email.Insecure, Host: "localhost", Port: 1025, Username: "dev", Password: "devpw"}, ""},
		{"smtp+insecure:// to ::1 is allowed, port 25 by default", "smtp+insecure://[::1]",
			email.Endpoint{Security: email.Insecure, Host: "::1", Port: 25}, ""},

		{"an empty URL is required", "", email.Endpoint{}, "SMTP_URL is required"},
		{"blank is empty", "   ", email.Endpoint{}, "SMTP_URL is required"},
		{"http:// is not SMTP", "http://clinic:pw@smtp.example.org", email.Endpoint{}, "must start with smtp://"},
		{"a bare host is not a URL", "smtp.example.org:587", email.Endpoint{}, "SMTP_URL"},
		{"smtp+insecure:// to a remote host is refused", "smtp+insecure://clinic:pw@smtp.example.org:25", email.Endpoint{}, "loopback"},
		{"smtp+insecure:// to a private address is refused", "smtp+insecure://10.0.0.5:1025", email.Endpoint{}, "loopback"},
		{"smtp+insecure:// to a name that merely starts with localhost is refused", "smtp+insecure://localhost.example.org:1025", email.Endpoint{}, "loopback"},
		{"a missing host is refused", "smtp://clinic:pw@:587", email.Endpoint{}, "has no host"},
		{"a non-numeric port is refused", "smtp://clinic:pw@smtp.example.org:smtp", email.Endpoint{}, "SMTP_URL"},
		{"port 0 is refused", "smtp://clinic:pw@smtp.example.org:0", email.Endpoint{}, "invalid port"},
		{"port 70000 is refused", "smtp://clinic:pw@smtp.example.org:70000", email.Endpoint{}, "invalid port"},
		{"an empty port is refused", "smtp://clinic:pw@smtp.example.org:", email.Endpoint{}, "empty port"},
		{"a path is refused", "smtp://clinic:pw@smtp.example.org:587/inbox", email.Endpoint{}, "no path"},
		{"a query is refused", "smtp://clinic:pw@smtp.example.org:587?tls=off", email.Endpoint{}, "no path, query"},
		{"a fragment is refused", "smtp://clinic:pw@smtp.example.org:587#x", email.Endpoint{}, "no path, query or fragment"},
		{"a user name without a password is refused", "smtp://clinic@smtp.example.org", email.Endpoint{}, "no password"},
		{"an empty password is refused", "smtp://clinic:@smtp.example.org", email.Endpoint{}, "no password"},
		{"a password without a user name is refused", "smtp://:pw@smtp.example.org", email.Endpoint{}, "no user name"},
		{"a host name with invalid characters is refused", "smtp://clinic:pw@smtp_!.example.org", email.Endpoint{}, "SMTP_URL"},
		{"an opaque URL is refused", "smtp:clinic@smtp.example.org", email.Endpoint{}, "must have the form"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := email.ParseURL(tt.raw)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseURL(%q) = %+v, want an error mentioning %q", tt.raw, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "SMTP_URL") {
					t.Errorf("error %q, want it to name SMTP_URL and mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURL(%q): %v", tt.raw, err)
			}
			if got != tt.want {
				t.Errorf("ParseURL(%q) = %#v (%s/%d/%q), want %s/%d/%q", tt.raw, got, got.Host, got.Port, got.Username,
					tt.want.Host, tt.want.Port, tt.want.Username)
			}
		})
	}
}

// The password must never show: not in errors (whatever is malformed
// around it), not when the endpoint is printed or logged.
func TestParseURLNeverShowsThePassword(t *testing.T) {
	const secret = "Hunter2Secret"
	raws := []string{
		"smtp://clinic:" + secret + "@smtp.example.org:587/path",
		"smtp://clinic:" + secret + "@smtp.example.org:99999",
		"smtp://clinic:" + secret + "@smtp.example.org:587?x=1",
		"smtp://clinic:" + secret + "@",
		"ftp://clinic:" + secret + "@smtp.example.org",
		"smtp+insecure://clinic:" + secret + "@smtp.example.org:25",
		"smtp://clinic:" + secret + "%zz@smtp.example.org",
		"smtp://clinic:" + secret + " @smtp.example.org",
		"smtp://clinic:" + secret + "/x@smtp.example.org",
		"smtp://clinic:" + secret + "#x@smtp.example.org",
		"clinic:" + secret + "@smtp.example.org",
		"smtp://clinic:Hunter2%0aSecret@smtp.example.org",
	}
	for _, raw := range raws {
		_, err := email.ParseURL(raw)
		if err == nil {
			t.Errorf("ParseURL(%q) succeeded, want an error", raw)
			continue
		}
		for _, part := range []string{secret, "Hunter2", "Secret"} {
			if strings.Contains(err.Error(), part) {
				t.Errorf("ParseURL(%q) error %q shows the password", raw, err)
			}
		}
	}
	ep, err := email.ParseURL("smtp://clinic%40example.org:" + secret + "@smtp.example.org")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{ep.String(), fmt.Sprint(ep), fmt.Sprintf("%v %+v %#v %s", ep, ep, ep, ep)} {
		if strings.Contains(s, secret) || strings.Contains(s, "linic@") {
			t.Errorf("the printed endpoint %q shows the password or the clear user address", s)
		}
	}
	if ep.String() != "smtp://c•••@example.org:xxxxx@smtp.example.org:587" {
		t.Errorf("String() = %q", ep.String())
	}
}

// FuzzParseURL: never panics, never shows the password in an error or in
// the printed endpoint, and what it accepts is self-consistent.
func FuzzParseURL(f *testing.F) {
	f.Add("smtp", "clinic", "pw", "smtp.example.org:587")
	f.Add("smtps", "a%40b", "p@ss", "[::1]:465")
	f.Add("smtp+insecure", "", "", "127.0.0.1:1025")
	f.Add("smtp", "u", "p/q#r?s", "h")
	f.Add("smtp", "u", "%zz", "h:0")
	f.Add("SMTP", "u", "x", "localhost.:25")
	f.Fuzz(func(t *testing.T, scheme, user, pass, hostport string) {
		// Markers at both ends of the password catch any fragment
		// echoed from its start or end.
		pw := "Qx7" + pass + "Zk9"
		raw := scheme + "://" + user + ":" + pw + "@" + hostport
		ep, err := email.ParseURL(raw)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "SMTP_URL ") {
				t.Errorf("error %q does not name SMTP_URL", err)
			}
			if (strings.Contains(err.Error(), "Qx7") || strings.Contains(err.Error(), "Zk9")) &&
				!strings.Contains(scheme+user+hostport, "Qx7") && !strings.Contains(scheme+user+hostport, "Zk9") {
				t.Errorf("ParseURL(%q) error %q shows the password", raw, err)
			}
			return
		}
		if ep.Port < 1 || ep.Port > 65535 || ep.Host == "" {
			t.Errorf("ParseURL(%q) accepted %#v", raw, ep)
		}
		if ep.Security == email.Insecure {
			ip := net.ParseIP(ep.Host)
			if !strings.EqualFold(strings.TrimSuffix(ep.Host, "."), "localhost") && (ip == nil || !ip.IsLoopback()) {
				t.Errorf("smtp+insecure:// accepted the non-loopback host %q", ep.Host)
			}
		}
		if (ep.Username == "") != (ep.Password == "") {
			t.Errorf("ParseURL(%q) accepted a half credential %#v", raw, ep)
		}
		if !strings.Contains(scheme+user+hostport, "Qx7") && !strings.Contains(scheme+user+hostport, "Zk9") {
			for _, s := range []string{ep.String(), fmt.Sprintf("%v %+v %#v", ep, ep, ep)} {
				if strings.Contains(s, "Qx7") || strings.Contains(s, "Zk9") {
					t.Errorf("the printed endpoint %q shows the password", s)
				}
			}
		}
	})
}
