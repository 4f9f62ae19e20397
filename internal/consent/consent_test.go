package consent_test

import (
	"context"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/redistest"
)

var ctx = context.Background()

func TestConsentChangesAreRecordedOnceWithTheirEvidence(t *testing.T) {
	srv := redistest.Start(t)
	l := consent.New(srv.Client())
	p := consent.Identity{Kind: consent.Phone, Value: "+14155550123"}

	if out, _ := l.OptedOut(ctx, "clinic-a", p); out {
		t.Fatal("an identity never recorded is not opted out")
	}
	changed, err := l.Set(ctx, "clinic-a", p, true, consent.SourceKeyword, "SM0001")
	if err != nil || !changed {
		t.Fatalf("first STOP: %v %v", changed, err)
	}
	if again, _ := l.Set(ctx, "clinic-a", p, true, consent.SourceKeyword, "SM0002"); again {
		t.Fatal("a second STOP must not count as a change (one confirmation only)")
	}
	if out, _ := l.OptedOut(ctx, "clinic-a", p); !out {
		t.Fatal("not opted out after STOP")
	}
	if out, _ := l.OptedOut(ctx, "clinic-b", p); out {
		t.Fatal("consent is per tenant")
	}
	if changed, _ := l.Set(ctx, "clinic-a", p, false, consent.SourceKeyword, "SM0003"); !changed {
		t.Fatal("START must opt back in")
	}
	st, err := l.Get(ctx, "clinic-a", p)
	if err != nil || st.OptedOut || len(st.Changes) != 2 || st.Changes[0].Evidence != "SM0001" || st.Changes[1].Source != consent.SourceKeyword {
		t.Fatalf("state %+v %v", st, err)
	}
	if first, _ := l.Set(ctx, "clinic-a", consent.Identity{Kind: consent.Email, Value: "a@example.org"}, false, consent.SourceAPI, "signed form 12"); !first {
		t.Fatal("a first recorded opt-in is evidence and must be kept")
	}
	var exported []string
	_ = l.Export(ctx, "clinic-a", func(s consent.State) error { exported = append(exported, s.Identity.String()); return nil })
	if len(exported) != 2 {
		t.Fatalf("export %v", exported)
	}
	keys, _ := srv.Client().Keys(ctx, "gw:consent:*").Result()
	for _, k := range keys {
		if strings.Contains(k, "4155550123") || strings.Contains(k, "example.org") {
			t.Fatalf("an identity appears in a key name: %s", k)
		}
	}
	if _, err := l.Set(ctx, "clinic-a", consent.Identity{Kind: "fax", Value: "1"}, true, consent.SourceAPI, ""); err == nil {
		t.Fatal("an unknown identity kind must be refused")
	}
}

func TestKeywords(t *testing.T) {
	cases := []struct {
		body string
		want consent.Action
		lang string
	}{
		{"STOP", consent.OptOut, "en"}, {" stop ", consent.OptOut, "en"}, {"Stop.", consent.OptOut, "en"},
		{"s t o p", consent.OptOut, "en"}, {"UnSubscribe", consent.OptOut, "en"}, {"opt-out", consent.OptOut, "en"},
		{"退订", consent.OptOut, "zh"}, {"td", consent.OptOut, "zh"}, {"T", consent.OptOut, "zh"},
		{"START", consent.OptIn, "en"}, {"unstop", consent.OptIn, "en"}, {"yes", consent.OptIn, "en"},
		{"HELP", consent.Help, "en"}, {"info", consent.Help, "en"},
		{"please stop calling me", consent.NoKeyword, ""}, {"1", consent.NoKeyword, ""}, {"stopp", consent.NoKeyword, ""},
		{"", consent.NoKeyword, ""}, {"胸痛", consent.NoKeyword, ""},
	}
	for _, c := range cases {
		a, lang := consent.Keyword(c.body)
		if a != c.want || lang != c.lang {
			t.Errorf("Keyword(%q) = %v %q, want %v %q", c.body, a, lang, c.want, c.lang)
		}
	}
}

func FuzzKeyword(f *testing.F) {
	for _, s := range []string{"STOP", "退订", " t ", "yes!", "HELP me"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		a, lang := consent.Keyword(body)
		if (a == consent.NoKeyword) != (lang == "") {
			t.Fatalf("Keyword(%q) = %v %q", body, a, lang)
		}
		if a != consent.NoKeyword && consent.Replies[a][lang] == "" {
			t.Fatalf("no reply for %v in %q", a, lang)
		}
	})
}
