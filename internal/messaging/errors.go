package messaging

import "github.com/patientmsg/gateway/internal/invalid"

// FieldError points at one bad field of a draft, by its JSON name
// ("to.phone", "vars.name").
type FieldError = invalid.FieldError

// InvalidError is why a draft cannot be made into a message: every bad
// field, each with what is wrong and how to fix it. The API answers it
// with 422.
type InvalidError = invalid.Error

// Invalid is an *InvalidError of one field.
func Invalid(field, detail string) *InvalidError { return invalid.Field(field, detail) }

// sorted orders field errors by field.
func sorted(errs []FieldError) []FieldError { return invalid.Sorted(errs) }
