package remote

import (
	"errors"
	"strings"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

type errcodeResponse struct{ *errcode.ErrorResponse }

func asErrorResponse(err error, out **errcodeResponse) bool {
	var r *errcode.ErrorResponse
	if !errors.As(err, &r) {
		return false
	}
	*out = &errcodeResponse{r}
	return true
}

// detail is the registry's own message, or the request when it sent none.
func (r *errcodeResponse) detail() string {
	if len(r.Errors) == 0 {
		return r.Method + " " + r.URL.Path
	}
	msgs := make([]string, len(r.Errors))
	for i, e := range r.Errors {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}
