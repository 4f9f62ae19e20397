package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/patientmsg/gateway/internal/messaging"
)

// parseDraft decodes a POST /v1/messages body (its values are checked by
// the messaging package, after a template is expanded).
func parseDraft(body []byte) (*messaging.Draft, *Problem) {
	var d messaging.Draft
	if p := decodeStrict(body, &d); p != nil {
		return nil, p
	}
	return &d, nil
}

func jsonProblem(err error) *Problem {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return problem(400, "malformed-json", fmt.Sprintf("the body is not valid JSON (at byte %d): %v", se.Offset, se))
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return problem(400, "malformed-json", "the body must be a JSON object")
		}
		return problem(400, "malformed-json", fmt.Sprintf("field %s must be a JSON %s, not %s", field, jsonType(te.Type.Kind().String()), te.Value))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return problem(400, "malformed-json", "the body ends before the JSON object does")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return problem(400, "unknown-field", "the request has a field this API does not know: "+messaging.Clip(strings.TrimPrefix(err.Error(), "json: unknown field "))+"; see the API reference")
	}
	return problem(400, "malformed-json", "the body is not a valid message request")
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "ptr", "struct", "map":
		return "object"
	case "slice":
		return "string"
	}
	return kind
}
