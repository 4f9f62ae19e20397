package chaos

import "testing"

func TestTheLogCheckFindsPatientsDataButNotDigitsInsideHexIDs(t *testing.T) {
	for _, c := range []struct {
		line string
		want bool
	}{
		{`{"msg":"sent","to":"+14155590123"}`, true},
		{`{"msg":"sent","to":"+14155700042"}`, true},
		{`POST /2010-04-01/Accounts/AC1/Messages.json To=%2B14155590123&Body=x`, true},
		{`{"msg":"reply","from":"oChaosPatient000000000000007"}`, true},
		{`{"msg":"x","body":"flood alert: leave the ground floor"}`, true},
		{`{"msg":"x","err":"call 4155590123 now"}`, true},
		// A SID, a trace id and a hashed key that hold such a run of digits.
		{`{"msg":"accepted by provider","provider_id":"SM2ec0bd80f7710e9f7eb94155712345"}`, false},
		{`{"msg":"x","trace_id":"4155712345a7b8c9d0e1f2a3b4c5d6e7"}`, false},
		{`{"msg":"x","key":"gw:last:0000415559012300000000000000ab"}`, false},
		{`{"msg":"accepted by provider","provider_id":"SM2ec0bd80f7710e9f7eb9d0c1b2a3f4"}`, false},
	} {
		if got := holdsSecret(c.line); got != c.want {
			t.Errorf("holdsSecret(%s) = %v, want %v", c.line, got, c.want)
		}
	}
}
