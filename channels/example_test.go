package channels_test

import (
	"fmt"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// A channel declares its facts once; the API's validation, broadcasts,
// plans and consent read them (docs/adding-a-channel.md).
func ExampleDeclare() {
	channels.Declare(channels.Spec{Name: "pager", Address: channels.Phone, MaxChars: 240, Unit: "pages"})
	spec, _ := channels.SpecOf("pager")
	who := ledger.Recipient{Phone: "+14155550100", Email: "nurse@example.org"}
	fmt.Println(spec.Address, spec.MaxChars, channels.AddressOf("pager", who), channels.AddressOf("email", who))
	// Output: phone 240 +14155550100 nurse@example.org
}
