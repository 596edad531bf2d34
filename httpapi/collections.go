package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/agentvault/agentvault/vault"
)

func (s *Server) createCollection(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name   string        `json:"name"`
		Fields []vault.Field `json:"fields"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	c, err := s.svc.CreateCollection(r.Context(), meta(r), vault.Collection{Name: req.Name, Fields: req.Fields})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, c)
}

func (s *Server) listCollections(w http.ResponseWriter, r *http.Request) {
	cs, err := s.svc.VisibleCollections(r.Context(), meta(r).Actor, r.URL.Query().Get("purpose"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"collections": cs})
}

func (s *Server) getCollection(w http.ResponseWriter, r *http.Request) {
	c, err := s.svc.GetCollection(r.Context(), meta(r).Actor, mux.Vars(r)["collection"], r.URL.Query().Get("purpose"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}
