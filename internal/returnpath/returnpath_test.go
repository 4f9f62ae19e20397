package returnpath_test

import (
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/returnpath"
)

const (
	secret = "a-return-path-secret-of-32-bytes!"
	id     = "01JBK7Q9ZK3M4N5P6Q7R8S9T0V"
	other  = "01JBK7Q9ZK3M4N5P6Q7R8S9T0W"
)

func keys(t *testing.T) *returnpath.Keys {
	t.Helper()
	k, err := returnpath.New(secret, "Mail.Example-Clinic.test")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestAnAddressNamesItsMessageAndKindAndNothingElseVerifies(t *testing.T) {
	k := keys(t)
	bounce := k.Address(returnpath.Bounce, id)
	if !strings.HasPrefix(bounce, "bounce+01jbk7q9zk3m4n5p6q7r8s9t0v.") || !strings.HasSuffix(bounce, "@mail.example-clinic.test") || len(bounce) > 80 {
		t.Fatalf("bounce address %q", bounce)
	}
	for _, addr := range []string{bounce, strings.ToUpper(bounce), "<" + bounce + ">"} {
		if kind, got, ok := k.Parse(addr); !ok || kind != returnpath.Bounce || got != id {
			t.Fatalf("Parse(%q) = %q %q %v", addr, kind, got, ok)
		}
	}
	reply := k.Address(returnpath.Reply, id)
	if kind, got, ok := k.Parse(reply); !ok || kind != returnpath.Reply || got != id {
		t.Fatalf("Parse(reply) = %q %q %v", kind, got, ok)
	}
	sig := bounce[strings.IndexByte(bounce, '.')+1 : strings.IndexByte(bounce, '@')]
	otherKeys, _ := returnpath.New(strings.Repeat("x", 32), "mail.example-clinic.test")
	for name, forged := range map[string]string{
		"another message's id under this signature": "bounce+" + strings.ToLower(other) + "." + sig + "@mail.example-clinic.test",
		"the bounce signature on a reply address":   "reply+" + strings.ToLower(id) + "." + sig + "@mail.example-clinic.test",
		"another domain":           strings.Replace(bounce, "example-clinic", "example-clinlc", 1),
		"no signature":             "bounce+" + strings.ToLower(id) + "@mail.example-clinic.test",
		"an unknown kind":          strings.Replace(bounce, "bounce+", "admin+", 1),
		"a plain mailbox":          "postmaster@mail.example-clinic.test",
		"another secret's address": otherKeys.Address(returnpath.Bounce, id),
		"not an address":           "bounce+",
	} {
		if _, _, ok := k.Parse(forged); ok {
			t.Errorf("%s (%q) verified", name, forged)
		}
	}
}

func TestATokenIsOpaqueAndUnforgeable(t *testing.T) {
	k := keys(t)
	tok := k.Token(id)
	if len(tok) != 43 || strings.Contains(strings.ToUpper(tok), id[:10]) {
		t.Fatalf("token %q", tok)
	}
	if got, ok := k.ParseToken(tok); !ok || got != id {
		t.Fatalf("ParseToken = %q %v", got, ok)
	}
	flipped := []byte(tok)
	flipped[3] ^= 1
	for name, bad := range map[string]string{
		"a changed character": string(flipped),
		"another message's":   k.Token(other)[:20] + tok[20:],
		"truncated":           tok[:42],
		"empty":               "",
	} {
		if _, ok := k.ParseToken(bad); ok {
			t.Errorf("%s token verified", name)
		}
	}
	if k.Token("not-a-ulid") != "" || k.Address(returnpath.Reply, "x") != "" {
		t.Fatal("only message ids get addresses and tokens")
	}
}

func TestASecretTooShortOrABadDomainIsRefused(t *testing.T) {
	if _, err := returnpath.New("short", "mail.example.test"); err == nil {
		t.Fatal("short secret accepted")
	}
	for _, d := range []string{"exämple.test", "a..b", "-a.test", "a b.test"} {
		if _, err := returnpath.New(secret, d); err == nil {
			t.Errorf("domain %q accepted", d)
		}
	}
	if k, err := returnpath.New(secret, ""); err != nil || k.Address(returnpath.Bounce, id) != "" || k.Token(id) == "" {
		t.Fatal("without a domain the keys still sign tokens, and make no addresses")
	}
}
