package main

import (
	"net"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	})
	addr := net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT"))
	if err := http.ListenAndServe(addr, nil); err != nil {
		panic(err)
	}
}
