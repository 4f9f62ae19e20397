package messaging_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/patientmsg/gateway/internal/messaging"
)

// A draft is what the API, a broadcast, a plan or an escalation wants to
// send. Validate normalises it, or says what is wrong with each field.
func ExampleDraft_Validate() {
	phone, body := "+44 7911 123456", "Your results are ready. Reply 1 to book a call."
	d := &messaging.Draft{Channel: "sms", To: &messaging.To{Phone: &phone}, Body: &body}
	v, err := d.Validate([]string{"sms", "email"}, time.Now())
	fmt.Println(v.To.Phone, v.Priority, v.Units, v.Encoding, err)

	d = &messaging.Draft{Channel: "email", To: &messaging.To{Phone: &phone}, Body: &body}
	_, err = d.Validate([]string{"sms", "email"}, time.Now())
	var invalid *messaging.InvalidError
	if errors.As(err, &invalid) {
		for _, fe := range invalid.Errors {
			fmt.Println(fe.Field+":", fe.Detail)
		}
	}
	// Output:
	// +447911123456 normal 1 GSM-7 <nil>
	// to.phone: does not apply to the email channel, which needs to.email
	// to.email: is required for the email channel
	// subject: is required for the email channel
}
