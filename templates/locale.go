package templates

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/text/language"

	"github.com/patientmsg/gateway/internal/address"
)

// DefaultLocale is the locale a Chain ends with unless configured otherwise.
const DefaultLocale = "en"

// Errors of picking a locale.
var (
	// ErrNoLocale: the template has no variant for the requested locale, its
	// fallbacks or the default locale.
	ErrNoLocale = errors.New("no locale variant")
	// ErrBadLocale: the requested locale is not a BCP 47 language tag.
	ErrBadLocale = errors.New("not a BCP 47 language tag")
)

// maxFallbackHops bounds how far a chain of configured fallbacks is followed.
const maxFallbackHops = 8

// Chain picks a template's locale variant for a requested locale. It tries,
// in order:
//
//  1. the requested locale ("zh-HK");
//  2. the configured extra fallbacks, followed from one to the next
//     (zh-HK → zh-TW);
//  3. the base language of the requested locale and of its fallbacks ("zh"):
//     a variant named "zh", or else the first variant with that base
//     language in sorted order ("zh-CN" before "zh-TW");
//  4. the default locale, exactly or by its base language.
//
// Tags are compared in canonical form, so "zh-hk" is "zh-HK". The zero
// Chain has no fallbacks and the default locale "en".
type Chain struct {
	def       string
	fallbacks map[string]string
}

// NewChain returns a Chain ending with defaultLocale ("" means "en") that
// also tries fallbacks (from → to, as ParseFallbacks returns them). Tags are
// canonicalised; the map is copied.
func NewChain(defaultLocale string, fallbacks map[string]string) Chain {
	c := Chain{def: DefaultLocale, fallbacks: make(map[string]string, len(fallbacks))}
	if tag, ok := canonicalLocale(defaultLocale); ok {
		c.def = tag
	}
	for from, to := range fallbacks {
		f, ok1 := canonicalLocale(from)
		t, ok2 := canonicalLocale(to)
		if ok1 && ok2 && f != t {
			c.fallbacks[f] = t
		}
	}
	return c
}

// Default returns the chain's default locale.
func (c Chain) Default() string {
	if c.def == "" {
		return DefaultLocale
	}
	return c.def
}

// ParseFallbacks parses configured locale fallbacks: "from=to" pairs of BCP
// 47 tags separated by ";" (e.g. "zh-HK=zh-TW;zh-MO=zh-HK"). Spaces around
// tags are ignored and the empty string means none. A locale may have one
// fallback, and fallbacks must not form a loop.
func ParseFallbacks(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, pair := range strings.Split(s, ";") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		fromS, toS, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("locale fallback %q: want from=to, e.g. zh-HK=zh-TW", pair)
		}
		from, ok1 := canonicalLocale(strings.TrimSpace(fromS))
		to, ok2 := canonicalLocale(strings.TrimSpace(toS))
		switch {
		case !ok1:
			return nil, fmt.Errorf("locale fallback %q: %q is not a BCP 47 language tag", pair, strings.TrimSpace(fromS))
		case !ok2:
			return nil, fmt.Errorf("locale fallback %q: %q is not a BCP 47 language tag", pair, strings.TrimSpace(toS))
		case from == to:
			return nil, fmt.Errorf("locale fallback %q: a locale cannot fall back to itself", pair)
		case out[from] != "":
			return nil, fmt.Errorf("locale fallback %q: %s already falls back to %s", pair, from, out[from])
		}
		out[from] = to
	}
	for from := range out {
		seen := map[string]bool{from: true}
		for cur := out[from]; cur != ""; cur = out[cur] {
			if seen[cur] {
				return nil, fmt.Errorf("locale fallbacks loop: %s falls back to itself through %s", from, cur)
			}
			seen[cur] = true
		}
	}
	return out, nil
}

// Pick returns the locale variant of t the chain chooses for locale, and
// its tag. An empty locale asks for the default. It fails with ErrBadLocale
// for a malformed tag and ErrNoLocale when no variant fits.
func (c Chain) Pick(t *Template, locale string) (string, *Forms, error) {
	if t == nil {
		return "", nil, fmt.Errorf("%w: no template", ErrNoLocale)
	}
	// The template's variants by canonical tag, in sorted order.
	var keys []string
	byTag := make(map[string]string, len(t.Locales))
	for _, k := range sortedKeys(t.Locales) {
		if t.Locales[k] == nil {
			continue
		}
		tag, ok := canonicalLocale(k)
		if !ok {
			continue
		}
		if _, dup := byTag[tag]; !dup {
			byTag[tag] = k
			keys = append(keys, tag)
		}
	}
	exact := func(tag string) (string, bool) {
		k, ok := byTag[tag]
		return k, ok
	}
	byBase := func(tag string) (string, bool) {
		base := baseLanguage(tag)
		if base == "" {
			return "", false
		}
		if k, ok := byTag[base]; ok {
			return k, true
		}
		for _, kt := range keys { // sorted
			if baseLanguage(kt) == base {
				return byTag[kt], true
			}
		}
		return "", false
	}

	var seq []string
	if strings.TrimSpace(locale) != "" {
		req, ok := canonicalLocale(locale)
		if !ok {
			return "", nil, fmt.Errorf("%w: %q", ErrBadLocale, locale)
		}
		seq = append(seq, req)
		seen := map[string]bool{req: true}
		for cur, i := req, 0; i < maxFallbackHops; i++ {
			next, ok := c.fallbacks[cur]
			if !ok || seen[next] {
				break
			}
			seen[next] = true
			seq = append(seq, next)
			cur = next
		}
	}
	def := c.Default()
	for _, try := range []func(string) (string, bool){exact, byBase} {
		for _, tag := range seq {
			if k, ok := try(tag); ok {
				return k, t.Locales[k], nil
			}
		}
	}
	for _, try := range []func(string) (string, bool){exact, byBase} {
		if k, ok := try(def); ok {
			return k, t.Locales[k], nil
		}
	}
	asked := locale
	if strings.TrimSpace(asked) == "" {
		asked = def
	}
	return "", nil, fmt.Errorf("%w: template %q has no variant for %s or its fallbacks (it has %s)",
		ErrNoLocale, t.Name, asked, strings.Join(keys, ", "))
}

// canonicalLocale parses a BCP 47 tag and returns its canonical form
// (package address owns the rule).
func canonicalLocale(s string) (string, bool) { return address.Locale(s) }

// baseLanguage returns the language subtag of a canonical tag ("zh" for
// "zh-HK"), without guessing one for "und".
func baseLanguage(tag string) string {
	t, err := language.Parse(tag)
	if err != nil {
		return ""
	}
	base, _, _ := t.Raw()
	if s := base.String(); s != "und" {
		return s
	}
	return ""
}
