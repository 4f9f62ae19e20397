package channels

import (
	"fmt"
	"sort"
	"sync"

	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/sms"
)

// Address is the kind of address a channel delivers to.
type Address string

// Address kinds.
const (
	Phone        Address = "phone"
	Email        Address = "email"
	WeChatOpenID Address = "wechat_openid"
)

// Spec is what a channel declares once, for every part of the gateway
// that needs to know it: the API's validation, the broadcast cascade and
// its estimate, follow-up plans, consent. A channel's folder declares its
// Spec (Declare); the four built-in ones are declared here.
type Spec struct {
	// Name is the channel's API name ("sms").
	Name string
	// Address is what a message on it is addressed with.
	Address Address
	// MaxChars bounds a message's body (characters).
	MaxChars int
	// Units counts what a body costs its sender and is priced by (SMS
	// segments, with the encoding); nil: one unit per message.
	Units func(body string) (units int, encoding string)
	// Unit names the priced unit in plural ("SMS segments").
	Unit string
}

// Per-channel body limits of the built-in channels.
const (
	MaxVoiceChars  = 4000   // what one <Say> may speak
	MaxWeChatChars = 2000   // a customer-service text message
	MaxEmailChars  = 100000 // the text part of an email
)

var (
	specsMu sync.RWMutex
	specs   = map[string]Spec{}
)

func init() {
	for _, s := range []Spec{
		{Name: "sms", Address: Phone, MaxChars: sms.MaxChars, Unit: "SMS segments", Units: func(body string) (int, string) {
			info := sms.Analyze(body)
			return info.Segments, string(info.Encoding)
		}},
		{Name: "voice", Address: Phone, MaxChars: MaxVoiceChars, Unit: "voice minutes"},
		{Name: "wechat", Address: WeChatOpenID, MaxChars: MaxWeChatChars, Unit: "WeChat messages"},
		{Name: "email", Address: Email, MaxChars: MaxEmailChars, Unit: "email messages"},
	} {
		Declare(s)
	}
}

// Declare makes a channel's facts known. It panics on a spec without a
// name, address kind or body limit, or on a name declared twice with
// other facts: both are programming errors found at start-up.
func Declare(s Spec) {
	if s.Name == "" || s.Address == "" || s.MaxChars <= 0 {
		panic(fmt.Sprintf("channels: incomplete spec %+v", s))
	}
	if s.Unit == "" {
		s.Unit = s.Name + " messages"
	}
	specsMu.Lock()
	defer specsMu.Unlock()
	if old, ok := specs[s.Name]; ok && (old.Address != s.Address || old.MaxChars != s.MaxChars) {
		panic(fmt.Sprintf("channels: %s declared twice", s.Name))
	}
	specs[s.Name] = s
}

// SpecOf returns a declared channel's facts.
func SpecOf(name string) (Spec, bool) {
	specsMu.RLock()
	defer specsMu.RUnlock()
	s, ok := specs[name]
	return s, ok
}

// Declared lists the declared channels' names, sorted.
func Declared() []string {
	specsMu.RLock()
	defer specsMu.RUnlock()
	out := make([]string, 0, len(specs))
	for n := range specs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Of returns a recipient's address of this kind ("" when it has none).
func (a Address) Of(r ledger.Recipient) string {
	switch a {
	case Phone:
		return r.Phone
	case Email:
		return r.Email
	case WeChatOpenID:
		return r.WeChatOpenID
	}
	return ""
}

// AddressOf returns a recipient's address on a declared channel ("" when
// it has none, or the channel is not declared).
func AddressOf(channel string, r ledger.Recipient) string {
	s, ok := SpecOf(channel)
	if !ok {
		return ""
	}
	return s.Address.Of(r)
}
