package twiliosim

import "strings"

// Twilio's own opt-out handling: a handset that texts one of the standard
// opt-out keywords to the account's numbers is blocked by Twilio, which
// refuses every later message to it with 21610 until it texts an opt-in
// keyword. The simulator does the same for the replies it is told of
// (HandsetReplied): tests and the dev patient phone report each SMS a
// patient sends, as it passes through Twilio on its way to the gateway.

var (
	optOutKeywords = map[string]bool{"STOP": true, "STOPALL": true, "UNSUBSCRIBE": true, "CANCEL": true, "END": true,
		"QUIT": true, "REVOKE": true, "OPTOUT": true}
	optInKeywords = map[string]bool{"START": true, "YES": true, "UNSTOP": true}
)

// HandsetReplied is an SMS a handset sent to the account: an opt-out
// keyword blocks the handset, an opt-in keyword unblocks it.
func (s *Server) HandsetReplied(from, body string) {
	word := strings.ToUpper(strings.TrimSpace(body))
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case optOutKeywords[word]:
		if s.blocked == nil {
			s.blocked = map[string]bool{}
		}
		s.blocked[from] = true
	case optInKeywords[word]:
		delete(s.blocked, from)
	}
}

func (s *Server) optedOut(to string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blocked[to]
}
