package audiences

import (
	"bytes"
	"strings"
	"testing"
)

func FuzzParseCSV(f *testing.F) {
	for _, seed := range []string{
		"",
		"phone\n+8613800138000\n13800138000\n",
		"\ufeffPhone,Email,WeChat_OpenID,Locale,TimeZone,External_ID,Name\r\n+1 650 253 0000,a@Example.org,oX_1,en-us,America/New_York,1,Ann\r\n",
		"email,locale\n\"a@example.org\",\"zh\nCN\"\nb@example.org,\"x\"y\n",
		"email;timezone\na@example.org;Europe/Paris\n;\n",
		"email,external_id\na@example.org,\"1\nb@example.org,2\n",
		"phone,email\n+8613800138000,a@example.org\n+8613800138001,a@EXAMPLE.org\n,\n,,,\n",
		"wechat_openid\roA\roA\r",
		"phone,phone\n1,2\n",
		"email\nb@example.org\n\xff\n",
	} {
		f.Add([]byte(seed), true)
		f.Add([]byte(seed), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, cn bool) {
		region := ""
		if cn {
			region = "CN"
		}
		res, err := ParseCSV(bytes.NewReader(data), ParseOptions{DefaultRegion: region, MaxRecipients: 1000, MaxBytes: 1 << 16})
		if err != nil {
			if res != nil {
				t.Fatalf("a result with an error: %v", err)
			}
			return
		}
		// Physical lines: as LF ends them, or CR alone in an old Mac file.
		lines := max(bytes.Count(data, []byte("\n")), bytes.Count(data, []byte("\r"))) + 1
		for _, e := range res.Errors {
			if e.Line < 1 || e.Line > lines || e.Reason == "" {
				t.Fatalf("error %q outside the file's %d lines", e, lines)
			}
		}
		if res.Rows != len(res.Recipients)+res.Invalid+res.Duplicates {
			t.Fatalf("rows %d != %d + %d + %d", res.Rows, len(res.Recipients), res.Invalid, res.Duplicates)
		}
		if len(res.Errors)+res.ErrorsOmitted != res.Invalid+res.Duplicates {
			t.Fatalf("%d errors listed and %d omitted for %d skipped rows", len(res.Errors), res.ErrorsOmitted, res.Invalid+res.Duplicates)
		}
		seen := map[string]bool{}
		for _, r := range res.Recipients {
			again := r
			if err := ValidateRecipient(&again, region); err != nil {
				t.Fatalf("recipient %+v does not validate: %v", r, err)
			}
			if again != r {
				t.Fatalf("recipient %+v normalises again to %+v", r, again)
			}
			for _, id := range r.Identities() {
				if seen[id.String()] {
					t.Fatalf("identity %v in two recipients", id)
				}
				seen[id.String()] = true
			}
		}
		for _, c := range res.IgnoredColumns {
			if strings.TrimSpace(c) == "" {
				t.Fatalf("empty ignored column name in %q", res.IgnoredColumns)
			}
		}
	})
}
