package templates

import (
	"errors"
	"reflect"
	"testing"
)

// localeDoc has an SMS form in each of the given locales.
func localeTemplate(t *testing.T, locales ...string) *Template {
	t.Helper()
	tpl := &Template{Name: "loc", Locales: map[string]*Forms{}}
	for _, l := range locales {
		tpl.Locales[l] = &Forms{SMS: "text in " + l}
	}
	return tpl
}

func TestChainPick(t *testing.T) {
	fallbacks, err := ParseFallbacks("zh-HK=zh-TW; zh-MO=zh-HK")
	if err != nil {
		t.Fatal(err)
	}
	plain := NewChain("en", nil)
	configured := NewChain("en", fallbacks)
	tests := []struct {
		name    string
		chain   Chain
		locales []string
		ask     string
		want    string
	}{
		{"exact", plain, []string{"en", "zh-CN"}, "zh-CN", "zh-CN"},
		{"case-insensitive", plain, []string{"en", "zh-CN"}, "zh-cn", "zh-CN"},
		{"zh-HK to base zh to zh-CN", plain, []string{"en", "zh-CN"}, "zh-HK", "zh-CN"},
		{"zh to zh-CN", plain, []string{"en", "zh-CN"}, "zh", "zh-CN"},
		{"base prefers the bare language", plain, []string{"en", "zh", "zh-CN"}, "zh-HK", "zh"},
		{"base takes the first variant in sorted order", plain, []string{"en", "zh-TW", "zh-CN"}, "zh-SG", "zh-CN"},
		{"fr to default en", plain, []string{"en", "zh-CN"}, "fr", "en"},
		{"empty asks for the default", plain, []string{"en", "zh-CN"}, "", "en"},
		{"en-US to en", plain, []string{"en", "zh-CN"}, "en-US", "en"},
		{"default by base language", plain, []string{"en-GB", "zh-CN"}, "fr", "en-GB"},
		{"configured zh-HK=zh-TW", configured, []string{"en", "zh-CN", "zh-TW"}, "zh-HK", "zh-TW"},
		{"unconfigured zh-HK", plain, []string{"en", "zh-CN", "zh-TW"}, "zh-HK", "zh-CN"},
		{"configured chain zh-MO to zh-HK to zh-TW", configured, []string{"en", "zh-CN", "zh-TW"}, "zh-MO", "zh-TW"},
		{"configured fallback absent: base", configured, []string{"en", "zh-CN"}, "zh-HK", "zh-CN"},
		{"configured default", NewChain("zh-CN", nil), []string{"en", "zh-CN"}, "fr", "zh-CN"},
		{"zero chain defaults to en", Chain{}, []string{"en", "zh-CN"}, "de", "en"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl := localeTemplate(t, tc.locales...)
			got, forms, err := tc.chain.Pick(tpl, tc.ask)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || forms != tpl.Locales[tc.want] {
				t.Errorf("Pick(%q) = %q, want %q", tc.ask, got, tc.want)
			}
		})
	}

	_, _, err = plain.Pick(localeTemplate(t, "zh-CN"), "fr")
	if !errors.Is(err, ErrNoLocale) {
		t.Errorf("no en variant: %v", err)
	}
	_, _, err = plain.Pick(localeTemplate(t, "en"), "not a locale")
	if !errors.Is(err, ErrBadLocale) {
		t.Errorf("bad locale: %v", err)
	}
}

// Render reports the locale it used.
func TestRenderReportsLocale(t *testing.T) {
	tpl := builtin(t, "crisis_safety_check")
	vars := map[string]string{"clinic_name": "仁济医院"}
	for ask, want := range map[string]string{"zh-HK": "zh-CN", "zh": "zh-CN", "fr": "en", "en-AU": "en"} {
		r, err := tpl.Render(NewChain("en", nil), "sms", ask, vars, false)
		if err != nil || r.Locale != want {
			t.Errorf("%s: %v, locale %q want %q", ask, err, r.Locale, want)
		}
	}
}

func TestParseFallbacks(t *testing.T) {
	got, err := ParseFallbacks(" zh-hk = zh-TW ;zh-MO=zh-HK;; ")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"zh-HK": "zh-TW", "zh-MO": "zh-HK"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
	if got, err := ParseFallbacks(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v %v", got, err)
	}
	for _, bad := range []string{"zh-HK", "zh-HK=", "=zh-TW", "zh-HK=zh-HK", "zh-HK=zh-TW;zh-HK=zh-CN", "zh-HK=zh-TW;zh-TW=zh-HK", "de=fr;fr=it;it=de", "zh-HK=!!"} {
		if _, err := ParseFallbacks(bad); err == nil {
			t.Errorf("ParseFallbacks(%q) accepted", bad)
		}
	}
}
