// Stand-in health check: exits 0 when the server answers.
const http = require('http');
http.get({ host: 'localhost', port: process.env.PORT || 80, timeout: 2000 }, (res) => process.exit(res.statusCode === 200 ? 0 : 1))
  .on('error', () => process.exit(1));
