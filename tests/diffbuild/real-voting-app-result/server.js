// Stand-in for the result service.
const http = require('http');
const ms = require('ms');
const port = process.env.PORT || 80;
http.createServer((req, res) => res.end('up ' + ms(process.uptime() * 1000) + '\n')).listen(port);
