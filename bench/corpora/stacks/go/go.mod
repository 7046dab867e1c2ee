module example.com/eval

go 1.22
