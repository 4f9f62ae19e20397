package inbound

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// MaxHelpText is the longest help text, in characters: it is sent as one
// immediate reply.
const MaxHelpText = 300

// helpLanguages are the languages of the HELP keywords (package consent).
var helpLanguages = map[string]bool{"en": true, "zh": true}

// ErrNoHelpText is returned by HelpTexts.Set when it is given no text.
var ErrNoHelpText = errors.New("inbound: no help text given")

// HelpTextError is a help text that cannot be kept: its language is not
// one of the keywords' ("en", "zh"), or it is empty or longer than
// MaxHelpText characters.
type HelpTextError struct {
	Lang string
}

func (e *HelpTextError) Error() string {
	return fmt.Sprintf("inbound: help text %q: languages are en and zh; a help text is 1-%d characters", e.Lang, MaxHelpText)
}

// HelpTexts keeps each tenant's answer to HELP and INFO, per language.
type HelpTexts struct{ rdb redis.UniversalClient }

// NewHelpTexts returns the help-text store on rdb.
func NewHelpTexts(rdb redis.UniversalClient) *HelpTexts { return &HelpTexts{rdb: rdb} }

// helpTextKey holds a tenant's help texts by language.
func helpTextKey(tenant string) string { return "gw:help:{" + tenant + "}" }

// Set sets the tenant's help texts of the languages given (language →
// text), leaving the others as they were. Nothing is set when a text is
// not valid (*HelpTextError) or none is given (ErrNoHelpText).
func (h *HelpTexts) Set(ctx context.Context, tenant string, texts map[string]string) error {
	args := []any{}
	for lang, text := range texts {
		if !helpLanguages[lang] || text == "" || len([]rune(text)) > MaxHelpText {
			return &HelpTextError{Lang: lang}
		}
		args = append(args, lang, text)
	}
	if len(args) == 0 {
		return ErrNoHelpText
	}
	return h.rdb.HSet(ctx, helpTextKey(tenant), args...).Err()
}

// Get returns the tenant's help text in a language; redis.Nil when the
// tenant has none in it.
func (h *HelpTexts) Get(ctx context.Context, tenant, lang string) (string, error) {
	return h.rdb.HGet(ctx, helpTextKey(tenant), lang).Result()
}
