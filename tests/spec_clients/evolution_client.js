// The JavaScript client class of the API document ("Code Examples"), verbatim.
// tests/server/test_spec_clients.py runs it in Node against a real server, changing
// only the URL (and supplying the token).
class EvolutionWebSocket {
  constructor(token) {
    this.token = token;
    this.ws = null;
    this.reconnectAttempts = 0;
    this.messageQueue = [];
  }
  
  connect() {
    this.ws = new WebSocket('wss://ws.t-developer.com/v1/evolution');
    
    this.ws.onopen = () => {
      this.authenticate();
      this.subscribe(['evolution', 'metrics', 'alerts']);
      this.flushMessageQueue();
    };
    
    this.ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      this.handleMessage(message);
    };
    
    this.ws.onerror = (error) => {
      console.error('WebSocket error:', error);
      this.reconnect();
    };
  }
  
  authenticate() {
    this.send({
      type: 'auth',
      token: this.token
    });
  }
  
  subscribe(channels) {
    this.send({
      type: 'subscribe',
      channels: channels
    });
  }
  
  send(message) {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
    } else {
      this.messageQueue.push(message);
    }
  }
  
  handleMessage(message) {
    switch(message.type) {
      case 'evolution_update':
        this.onEvolutionUpdate(message.data);
        break;
      case 'alert':
        this.onAlert(message.data);
        break;
      case 'metrics':
        this.onMetrics(message.data);
        break;
    }
  }
  
  reconnect() {
    if (this.reconnectAttempts < 5) {
      setTimeout(() => {
        this.reconnectAttempts++;
        this.connect();
      }, Math.pow(2, this.reconnectAttempts) * 1000);
    }
  }
}
