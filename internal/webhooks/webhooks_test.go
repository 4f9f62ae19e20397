package webhooks

import (
	"testing"
	"time"
)

func TestSignaturesVerifyOnlyForTheSameBodySecretAndTime(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"01J","type":"message.reply"}`)
	h := Sign("whsec_a", now, body)
	cases := []struct {
		name   string
		secret string
		header string
		body   []byte
		at     time.Time
		ok     bool
	}{
		{"the signed body verifies", "whsec_a", h, body, now, true},
		{"within the tolerance it verifies", "whsec_a", h, body, now.Add(4 * time.Minute), true},
		{"a replay after the tolerance is refused", "whsec_a", h, body, now.Add(6 * time.Minute), false},
		{"another secret is refused", "whsec_b", h, body, now, false},
		{"a changed body is refused", "whsec_a", h, []byte(`{"id":"01J","type":"message.status"}`), now, false},
		{"a header without v1 is refused", "whsec_a", "t=1800000000", body, now, false},
		{"garbage is refused", "whsec_a", "nonsense", body, now, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := Verify(c.secret, c.header, c.body, c.at, DefaultTolerance); (err == nil) != c.ok {
				t.Fatalf("Verify = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("t=1800000000,v1=00", []byte("{}"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		_ = Verify("whsec_x", header, body, time.Unix(1_800_000_000, 0), DefaultTolerance)
	})
}
